"""Side-by-side benchmark of the gateway against nginx and the Fastify peer (`make bench`)."""
