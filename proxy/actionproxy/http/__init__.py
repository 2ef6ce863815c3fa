"""The HTTP side: the aiohttp server, the two platforms' contracts (OpenWhisk's /init and /run,
Knative's /), health and drain, and the response helpers they share."""
