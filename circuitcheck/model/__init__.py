"""Model vocabulary: components, circuits, tasks, metrics, inputs, the running test's context,
and loading models through the model-source plugins. Light at import (the plugin reaches it at start-up)."""
