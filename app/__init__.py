"""Eddy's application: settings, the app factory and lifespan, error handling and the CLI."""
