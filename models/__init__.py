"""What every layer shares (routers, broker, storage): the pydantic schemas of the API, the error
tree, and the log's value types (`log`: records, offsets, partition state; `headers`: record
headers in their exact forms). Nothing here does I/O or imports another layer."""
