"""The HTTP API: routes, schemas, upload handling and the mapping of errors to responses."""
