# One image for both DMP processes; docker-compose.yml picks the command:
#   node dist/api/main.js       HTTP API
#   node dist/workers/main.js   Temporal worker

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile TypeScript to dist/ ------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

COPY . .
RUN npm run build

# --- runtime: production dependencies + compiled output ---------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY --from=build /app/dist ./dist
# The tag's browser script is served as is: tsc does not copy it.
COPY --from=build /app/api/public ./dist/api/public

# The base image ships an unprivileged "node" user (uid 1000).
USER node

EXPOSE 8080
CMD ["node", "dist/api/main.js"]
