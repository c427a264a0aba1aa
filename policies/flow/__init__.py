"""A flow-matching action-chunk policy with real-time chunking (`policy=flow`): the model and
its samplers (`model`), the policy the server hosts in three variants (`policy`), its config
(`config`) and its training command (`python -m policies.flow.train`)."""
