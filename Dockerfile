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
EXPOSE 5000 9090
ENTRYPOINT ["/lifeboat"]
CMD ["serve", "--listen", "0.0.0.0:5000", "--metrics-listen", "0.0.0.0:9090", "--data-dir", "/var/lib/lifeboat", "--log-format", "json"]
