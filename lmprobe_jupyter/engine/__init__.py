"""The engine: probes on language-model activations. Never imports IPython or widgets."""
