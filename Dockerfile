# syntax=docker/dockerfile:1
# A static lifeboat on distroless, running as non-root.
FROM golang:1.26 AS build
# The binary's module alone: go.work would pull in the test modules
# (integration/, charts/) and their dependencies.
ENV GOWORK=off
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/lifeboat ./cmd/lifeboat

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="lifeboat" \
      org.opencontainers.image.description="Node-local pull-through cache for container images" \
      org.opencontainers.image.source="https://github.com/lifeboat-dev/lifeboat" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/lifeboat /lifeboat
USER 65532:65532
# Every listener on loopback, as `lifeboat serve` defaults to: the image is
# meant for the host network (the chart's DaemonSet, `docker run
# --network host`), where that is the node's loopback and containerd on the
# node reaches it. No EXPOSE: nothing here listens on a published address.
# To publish a port, override the command with --listen 0.0.0.0:5000.
ENTRYPOINT ["/lifeboat"]
CMD ["serve", "--listen", "127.0.0.1:5000", "--metrics-listen", "127.0.0.1:5090", "--admin-listen", "127.0.0.1:5091", "--data-dir", "/var/lib/lifeboat", "--log-format", "json"]
