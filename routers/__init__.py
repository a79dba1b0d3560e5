"""HTTP and WebSocket endpoints: parse with `models`, call the broker, shape the response."""
