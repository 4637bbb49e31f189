# syntax=docker/dockerfile:1
# picogate's container image: a static binary on distroless, running as non-root 65532.
#   make image                      (docker build --build-arg VERSION=... -t ghcr.io/picogate/picogate:VERSION .)
#   docker buildx build --platform linux/amd64,linux/arm64 .   (k3s on a Raspberry Pi is arm64)
# The build stage runs on the builder's own platform and cross-compiles (no emulation needed).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X github.com/picogate/picogate/internal/version.Version=${VERSION}" \
    -o /out/picogate ./cmd/picogate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/picogate /usr/local/bin/picogate
USER 65532:65532
# 6080: devices (plain HTTP). 6081: /healthz, /readyz, /metrics (pass --admin-listen=:6081 in a pod).
EXPOSE 6080 6081
ENTRYPOINT ["/usr/local/bin/picogate"]
CMD ["serve"]
