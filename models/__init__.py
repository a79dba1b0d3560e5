"""Pydantic schemas and the error tree shared by every layer (routers, broker, storage)."""
