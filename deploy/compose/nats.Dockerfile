# nats-server from Debian 12's package, for compose.yaml.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nats-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir /data && chown nobody:nogroup /data
USER nobody
EXPOSE 4222 6222 8222
ENTRYPOINT ["nats-server"]
