# Multi-stage build: compile in the Rust image, run in a slim Debian image as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tollgate --bin tollgate \
    && cargo build --release --locked -p tollgate-loadtest --bin mock-anthropic

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tollgate
WORKDIR /app
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY --from=build /src/target/release/mock-anthropic /usr/local/bin/mock-anthropic
COPY config.yaml /app/config.yaml
USER tollgate
EXPOSE 8080
ENV TOLLGATE__SERVER__LISTEN=0.0.0.0:8080
# Secrets come from the environment: TOLLGATE__ADMIN__TOKEN, TOLLGATE__AUTH__KEY_SECRET,
# TOLLGATE__DATABASE__URL, TOLLGATE__UPSTREAMS.
ENTRYPOINT ["tollgate"]
CMD ["serve", "--config", "/app/config.yaml"]
