# syntax=docker/dockerfile:1
# Gatehouse as a container image: docs/install-container.md. The build stage packs the project the way
# `npm pack` does; the runtime stage installs only that tarball and its production dependencies.
ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin/ bin/
COPY src/ src/
RUN mkdir pkg && npm pack --pack-destination pkg

FROM ${NODE_IMAGE} AS runtime
COPY --from=build /src/pkg/ /tmp/pkg/
RUN npm install --global --omit=dev --no-audit --no-fund /tmp/pkg/gatehouse-*.tgz && rm -rf /tmp/pkg /root/.npm
# State (SQLite, generated secrets) lives in /data: set `data_dir: /data` in the config. The root file
# system can be read-only; nothing else is written.
RUN mkdir -p /data /etc/gatehouse && chown 1000:1000 /data
ENV NODE_ENV=production
# What the health check asks: the admin listener's /healthz (admin.host 127.0.0.1, admin.port 9090 by default).
ENV GATEHOUSE_HEALTH_URL=http://127.0.0.1:9090/healthz
USER 1000:1000
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.GATEHOUSE_HEALTH_URL).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["gatehouse"]
CMD ["start", "--config", "/etc/gatehouse/gatehouse.yaml"]
