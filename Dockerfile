# syntax=docker/dockerfile:1
# One image for every role: `agentq migrate | api | worker | scheduler | all | teams | keys`.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io downloads and compiled dependencies between builds
# (BuildKit); the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin agentq \
    && cp target/release/agentq /usr/local/bin/agentq

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin agentq
COPY --from=builder /usr/local/bin/agentq /usr/local/bin/agentq
USER agentq:agentq
ENV AGENTQ_LISTEN=0.0.0.0:8080 \
    AGENTQ_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["agentq"]
CMD ["--help"]
