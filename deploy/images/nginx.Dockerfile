# nginx from Debian's package, for sites that cannot pull the official `nginx` image. Same
# interface as the official image for compose.yaml: the site config goes to
# /etc/nginx/conf.d/default.conf; logs go to the container's stdout/stderr.
# Build context: deploy/images (this folder). BASE_IMAGE: see scripts/deploy-test.sh.
ARG BASE_IMAGE=edge-gateway-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
