# csp-ledger: release build in a Rust image, run in a slim Debian image.
FROM rust:1-bookworm AS build
# rdkafka is built with TLS (OpenSSL) and SASL (Cyrus) support.
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev libsasl2-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin csp-ledger

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 libsasl2-2 ca-certificates && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home /var/lib/csp-ledger csp-ledger && mkdir -p /var/lib/csp-ledger && chown csp-ledger /var/lib/csp-ledger
COPY --from=build /src/target/release/csp-ledger /usr/local/bin/csp-ledger
USER csp-ledger
# Listening beyond loopback is safe only with authentication, which is on by default: without
# --principals or --jwks, the first start writes an administrator key to the data directory.
ENV CSP_LEDGER_DATA_DIR=/var/lib/csp-ledger CSP_LEDGER_HTTP=0.0.0.0:8080
VOLUME /var/lib/csp-ledger
EXPOSE 8080
ENTRYPOINT ["csp-ledger"]
CMD ["serve"]
