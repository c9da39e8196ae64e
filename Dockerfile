# tokenwarden container image.
#
#   docker build -t tokenwarden .
#   docker volume create tokenwarden-data
#   docker run -d --name tokenwarden --restart unless-stopped --stop-timeout 90 \
#     -v tokenwarden-data:/var/lib/tokenwarden \
#     -v /etc/tokenwarden/tokenwarden.toml:/etc/tokenwarden/tokenwarden.toml:ro \
#     -v /etc/tokenwarden/encryption.key:/run/secrets/tokenwarden-key:ro \
#     -e TOKENWARDEN_CONFIG=/etc/tokenwarden/tokenwarden.toml -e ENTRA_CLIENT_SECRET \
#     -e TOKENWARDEN_ENCRYPTION__KEY_FILE=/run/secrets/tokenwarden-key \
#     tokenwarden
#   docker exec tokenwarden tokenwarden token sharepoint
#
# Add -e TOKENWARDEN_METRICS__ENABLED=true (and -e TOKENWARDEN_METRICS__LISTEN=0.0.0.0:9464
# -p 9464:9464 to scrape it) for /metrics, and for a health check that asks /healthz.
#
# The sealing key ([encryption], README "Encryption at rest") comes from a file mounted read-only,
# never from the image or the volume: 32 random bytes as base64, readable by UID 10001 only
# (`head -c 32 /dev/urandom | base64 > encryption.key; chown 10001 encryption.key; chmod 0400
# encryption.key`). With Compose, a secret does the same:
#   services:
#     tokenwarden:
#       environment: { TOKENWARDEN_ENCRYPTION__KEY_FILE: /run/secrets/tokenwarden-key }
#       secrets: [tokenwarden-key]
#   secrets:
#     tokenwarden-key: { file: /etc/tokenwarden/encryption.key }
# Back the key up apart from the volume: the database is useless without it.
#
# README.md, "Deployment", has the whole procedure.

# ---- build -----------------------------------------------------------------------------------
# The Rust image's version must be at least Cargo.toml's rust-version.
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, against placeholder sources: this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The crate itself. The migrations are compiled into the binary (sqlx::migrate!); the example
# configuration into tokenwarden-assets, which then writes what the Debian package installs
# beside the binary: man pages (gzipped), completions and the configuration (README "Install").
# COPY keeps the files' modification times, which can be older than the placeholder build: touch
# them so cargo does rebuild the crate.
COPY src ./src
COPY migrations ./migrations
# build.rs links the binary in link/symbol-order.txt's order (less resident code; DEVELOPERS.md).
COPY build.rs ./
COPY link/symbol-order.txt ./link/
COPY config/tokenwarden.example.toml ./config/
RUN touch src/main.rs src/lib.rs build.rs \
    && cargo build --release --locked --bins \
    && target/release/tokenwarden-assets target/assets \
    && gzip -9n target/assets/man/*

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates is not pinned (DL3008): the bookworm-slim tag already fixes the release, and
# Debian replaces a package version in place when it ships a fix, so a pinned version stops
# resolving and the build breaks exactly when an update matters. tokenwarden verifies TLS against
# the system's CA store (this bundle; add a private CA to it in a derived image) as well as the
# Mozilla roots compiled into it.
# The fixed UID/GID 10001 lets a bind-mounted state directory be prepared on the host
# (chown 10001:10001) and lets runAsNonRoot-style policies check the user.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 tokenwarden \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
        --home-dir /var/lib/tokenwarden --shell /usr/sbin/nologin tokenwarden \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/tokenwarden

COPY --from=builder /build/target/release/tokenwarden /usr/local/bin/tokenwarden
# The Debian package's layout: man pages, completions, the configuration (the example with
# `database` set to the volume's file; mount yours over it and set TOKENWARDEN_CONFIG), the
# example itself, and the health check.
COPY --from=builder /build/target/assets/man/*.1.gz /usr/share/man/man1/
COPY --from=builder /build/target/assets/man/*.5.gz /usr/share/man/man5/
COPY --from=builder /build/target/assets/completions/tokenwarden.bash /usr/share/bash-completion/completions/tokenwarden
COPY --from=builder /build/target/assets/completions/_tokenwarden /usr/share/zsh/vendor-completions/_tokenwarden
COPY --from=builder /build/target/assets/completions/tokenwarden.fish /usr/share/fish/vendor_completions.d/tokenwarden.fish
COPY --from=builder /build/target/assets/tokenwarden.toml /etc/tokenwarden/tokenwarden.toml
COPY --from=builder /build/config/tokenwarden.example.toml /usr/share/doc/tokenwarden/examples/tokenwarden.example.toml
COPY deploy/container/healthcheck /usr/local/lib/tokenwarden/healthcheck

# The database lives in the volume (the configuration key `database`, set through the
# environment). Logs are JSON lines on standard error, for `docker logs` and log shippers; set
# TOKENWARDEN_LOG__FORMAT=text to read them yourself. Both apply to `docker exec` commands too.
# DL3064 flags the "TOKEN" in the names; they hold a path and a log format, no secret.
# hadolint ignore=DL3064
ENV TOKENWARDEN_DATABASE=/var/lib/tokenwarden/tokenwarden.db \
    TOKENWARDEN_LOG__FORMAT=json

USER 10001:10001
WORKDIR /var/lib/tokenwarden
VOLUME /var/lib/tokenwarden

# With the metrics listener on (-e TOKENWARDEN_METRICS__ENABLED=true, and
# -e TOKENWARDEN_METRICS__LISTEN=0.0.0.0:9464 -p 9464:9464 to scrape it from outside), healthy
# while /healthz answers 200: the last sweep is no older than twice the schedule's longest gap
# and the database answers. Without it, healthy while the configuration is valid and the
# database opens and reads: `status` exits 0, 2 for a configuration error, 3 when the database is
# missing, corrupt, unreadable or locked past busy_timeout. Docker reserves exit 2 of a health
# check, so any failure becomes 1 (deploy/container/healthcheck). The daemon creates the
# database and finishes its first sweep within the start period. A provider that refuses
# refreshes does not make the container unhealthy: a restart would not fix it (see the metrics'
# alerts, `tokenwarden status` and the logs).
HEALTHCHECK --interval=60s --timeout=15s --start-period=30s --retries=3 \
    CMD ["/usr/local/lib/tokenwarden/healthcheck"]

# SIGTERM (docker stop) ends the daemon after the refreshes in flight are stored; give it up to
# http.request_timeout plus storing time with `docker run --stop-timeout 90` (the default is 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tokenwarden"]
CMD ["run"]
