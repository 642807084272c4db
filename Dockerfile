# relay, the named TCP relay and tunnel, run from source by the official Deno image.
#
#   docker build -t relay .
#   docker run -d --name relay --restart unless-stopped -p 8080:8080 relay
#
# Options come from RELAY_* environment variables (-e RELAY_MAX_CONNECTIONS=4096) or from flags
# after the image name (docker run … relay serve --idle-timeout 60s). Keep the port in
# RELAY_PORT so that the health check follows it. See docs/SELF_HOSTING.md.
FROM denoland/deno:2.9.6

WORKDIR /app
# Owned by root, so the relay's user can read the code but not change it.
COPY deno.json deno.lock main.ts ./
COPY lib/ lib/
COPY scripts/healthcheck.ts scripts/

# The image's unprivileged user (uid 1993); its module cache is /deno-dir.
USER deno
# Fetch every dependency now, checked against deno.lock, so start-up needs no network.
RUN deno install --frozen --entrypoint main.ts scripts/healthcheck.ts lib/web/healthcheck.ts

# The web side (status page, /metrics, /readyz, /ws, /playground) listens on loopback inside the
# container, for the health check; to publish it, add -e RELAY_HTTP_HOST=0.0.0.0 and
# -p 127.0.0.1:8081:8081 (and RELAY_HTTP_TOKEN_FILE before exposing it further).
ENV RELAY_HOST=0.0.0.0 \
    RELAY_PORT=8080 \
    RELAY_HTTP_PORT=8081
EXPOSE 8080 8081

# GET /readyz on the web side: the relay listens and is below --max-connections (registers no
# name; with TLS the web side is HTTPS for the public name, so loopback skips the name check).
# Without RELAY_HTTP_PORT it falls back to a TCP connect to RELAY_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["deno", "run", "--cached-only", "--frozen", "--quiet", "--allow-net", "--allow-env=RELAY_HOST,RELAY_PORT,RELAY_HTTP_HOST,RELAY_HTTP_PORT,RELAY_TLS_CERT", "--unsafely-ignore-certificate-errors=127.0.0.1,::1", "lib/web/healthcheck.ts"]

# The same permissions as the prebuilt binaries (scripts/build.ts): network, reading the files
# named in options (TLS, auth file, tunnel secret) and RELAY_* variables; nothing else.
# `serve` handles SIGTERM (docker stop) itself: it stops accepting, flushes, then exits 0.
ENTRYPOINT ["deno", "run", "--cached-only", "--frozen", "--allow-net", "--allow-read", "--allow-env=RELAY_*", "main.ts"]
CMD ["serve"]
