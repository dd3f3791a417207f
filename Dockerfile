# Multi-stage build. cargo-chef turns the workspace's manifests and lock file into a recipe,
# so the dependencies compile in a layer of their own that a source-only change leaves cached.
# The runtime image holds the tollgate binary alone (`tollgate demo` runs the simulated
# upstream in-process) and runs as a non-root user.

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# Stage 1: the recipe. Its content changes only when a manifest or Cargo.lock does, so the
# dependency layer of stage 2 stays cached through source-only changes.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Stage 2: the dependencies from the recipe, then tollgate itself.
FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked -p tollgate --bin tollgate --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p tollgate --bin tollgate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --home-dir /app --shell /usr/sbin/nologin tollgate \
    && install -d -m 0700 -o tollgate -g tollgate /var/lib/tollgate/journal
WORKDIR /app
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY config.yaml /app/config.yaml
# Numeric, so that an orchestrator can check the image does not run as root.
USER 10001:10001
EXPOSE 8080
ENV TOLLGATE__SERVER__LISTEN=0.0.0.0:8080
# The write-ahead journal (docs/METERING.md): mount a volume here, one per instance, kept with
# its database, so that a crashed container's journal is replayed by the next.
ENV TOLLGATE__METERING__JOURNAL_DIR=/var/lib/tollgate/journal
VOLUME /var/lib/tollgate/journal
# Secrets come from the environment: TOLLGATE__ADMIN__TOKEN, TOLLGATE__AUTH__KEY_SECRET,
# TOLLGATE__DATABASE__URL, TOLLGATE__UPSTREAMS.
ENTRYPOINT ["tollgate"]
CMD ["serve", "--config", "/app/config.yaml"]
