"""Watching decisions: trust metrics, drift (tables and embeddings), behaviour monitors,
monitor runs, alarms and the governor that lowers a flow's autonomy on its own."""
