"""Service code shared by the ingress and the deployments: the job model, upload decoding, the
pipeline, storage, the database, API keys, webhooks. The music itself is in `music`."""
