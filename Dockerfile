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
RUN deno install --frozen --entrypoint main.ts scripts/healthcheck.ts

ENV RELAY_HOST=0.0.0.0 \
    RELAY_PORT=8080
EXPOSE 8080

# A TCP connect to the relay's port: works with TLS and --require-auth, registers no name.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["deno", "run", "--cached-only", "--frozen", "--allow-net", "--allow-env=RELAY_HOST,RELAY_PORT", "scripts/healthcheck.ts"]

# The same permissions as the prebuilt binaries (scripts/build.ts): network, reading the files
# named in options (TLS, auth file, tunnel secret) and RELAY_* variables; nothing else.
# `serve` handles SIGTERM (docker stop) itself: it stops accepting, flushes, then exits 0.
ENTRYPOINT ["deno", "run", "--cached-only", "--frozen", "--allow-net", "--allow-read", "--allow-env=RELAY_*", "main.ts"]
CMD ["serve"]
