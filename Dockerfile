# csp-ledger: release build in a Rust image, run in a slim Debian image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin csp-ledger

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/csp-ledger csp-ledger && mkdir -p /var/lib/csp-ledger && chown csp-ledger /var/lib/csp-ledger
COPY --from=build /src/target/release/csp-ledger /usr/local/bin/csp-ledger
USER csp-ledger
ENV CSP_LEDGER_DATA_DIR=/var/lib/csp-ledger CSP_LEDGER_HTTP=0.0.0.0:8080
VOLUME /var/lib/csp-ledger
EXPOSE 8080
ENTRYPOINT ["csp-ledger"]
CMD ["serve"]
