"""gateway: the only public HTTP entry; identifies the caller and the plugin, forwards to the owning service."""
