"""Environment servers and the plugin mechanism."""
