// Test-only OAuth 2.0 authorization server (oidc-provider 9) for tokenwarden's
// integration tests. Never deploy it: every client secret is public and
// /test/* mints tokens for anyone.
//
// Started by tests/it/oauth_server.rs. Contract with the Rust side:
//   - stdout carries exactly ONE JSON line, printed once the port listens:
//       {"issuer","port","token_url","introspection_url","revocation_url","authorization_url"}
//     Everything else (oidc-provider warnings and notices, debug logs) goes to stderr.
//   - it exits when its stdin reaches EOF (so a killed test never leaves it
//     behind), on SIGTERM and on SIGINT. Set OAUTH_SERVER_IGNORE_STDIN=1 to run it by hand
//     with stdin at /dev/null.
//
// Environment:
//   PORT     listen port on 127.0.0.1 (default 0 = ephemeral)
//   AT_TTL   access-token and client-credentials-token lifetime in seconds (default 120)
//   OAUTH_SERVER_DEBUG=1   log every token-endpoint outcome to stderr
//
// Test routes (mounted in front of the provider's routes, same port):
//   POST /test/mint         {"client_id","scope"?,"account_id"?} -> {"refresh_token","access_token",...}
//   GET  /test/stats        -> {"refresh_ok","refresh_reuse","refresh_failed","grants_revoked","token_requests"}
//   POST /test/reset-stats  -> zeroes the counters

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

// oidc-provider prints its NOTICEs with console.info, i.e. to stdout. stdout
// belongs to the single ready line, so send every console channel to stderr
// before the library is loaded (hence the dynamic import below).
const writeStdout = (line) => process.stdout.write(`${line}\n`);
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
console.debug = (...args) => console.error(...args);

const { default: Provider, errors } = await import('oidc-provider');

const HOST = '127.0.0.1';
const DEBUG = process.env.OAUTH_SERVER_DEBUG === '1';

function envSeconds(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    console.error(`${name} must be a positive integer number of seconds, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
}

const AT_TTL = envSeconds('AT_TTL', 120);
const RT_TTL = 14 * 24 * 60 * 60;
const PORT = (() => {
  const raw = process.env.PORT ?? '';
  const value = raw === '' ? 0 : Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65535) {
    console.error(`PORT must be 0..65535, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
})();

const SCOPES = ['openid', 'offline_access', 'api:read', 'api:write'];
const ALL_SCOPES = SCOPES.join(' ');
const REDIRECT_URIS = ['http://127.0.0.1/callback'];
const DEFAULT_MINT_SCOPE = 'openid offline_access api:read';
const DEFAULT_ACCOUNT_ID = 'test-account';
const REFRESH_TOKEN_REUSED = 'refresh token already used'; // oidc-provider's error_detail wording

const epochTime = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

// refresh_ok       refresh_token grants answered 200
// refresh_reuse    refresh_token grants presenting a refresh token that another request
//                  had already consumed (rotated), earlier or concurrently; any outcome
// refresh_failed   refresh_token grants answered with an error (reuses included)
// grants_revoked   grants revoked: reuse detection, revocation endpoint
// token_requests   every POST /token, any grant type, any outcome
function zeroStats() {
  return {
    refresh_ok: 0,
    refresh_reuse: 0,
    refresh_failed: 0,
    grants_revoked: 0,
    token_requests: 0,
  };
}
let stats = zeroStats();

// ---------------------------------------------------------------------------
// Adapter: plain Maps, nothing evicted before it expires.
// (oidc-provider's built-in memory adapter is an LRU capped at 1000 entries
// and silently drops live tokens under load.)
// ---------------------------------------------------------------------------

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

class Store {
  constructor() {
    this.entries = new Map(); // "Model:id" -> { payload, expiresAt (ms) | Infinity }
    this.byUid = new Map(); // Session uid -> id
    this.byUserCode = new Map(); // userCode -> "Model:id"
    this.byGrant = new Map(); // grantId -> Set<"Model:id">
    // Every refresh token ever consumed (rotated), kept after the token itself
    // is deleted (e.g. by a grant revocation) until it would have expired:
    // id -> { by: sequence number of the request that consumed it, grantId, expiresAt }.
    this.consumedRefreshTokens = new Map();
  }

  get(key) {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.delete(key);
      return undefined;
    }
    return entry;
  }

  set(key, payload, expiresIn) {
    const previous = this.entries.get(key);
    if (previous) this.unindex(key, previous.payload);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    const stored = structuredClone(payload);
    this.entries.set(key, { payload: stored, expiresAt });
    const [model, id] = splitKey(key);
    if (model === 'Session' && stored.uid) this.byUid.set(stored.uid, id);
    if (stored.userCode) this.byUserCode.set(stored.userCode, key);
    if (GRANTABLE.has(model) && stored.grantId) {
      let members = this.byGrant.get(stored.grantId);
      if (!members) {
        members = new Set();
        this.byGrant.set(stored.grantId, members);
      }
      members.add(key);
    }
  }

  delete(key) {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.unindex(key, entry.payload);
  }

  unindex(key, payload) {
    const [, id] = splitKey(key);
    if (payload.uid && this.byUid.get(payload.uid) === id) this.byUid.delete(payload.uid);
    if (payload.userCode && this.byUserCode.get(payload.userCode) === key) {
      this.byUserCode.delete(payload.userCode);
    }
    if (payload.grantId) {
      const members = this.byGrant.get(payload.grantId);
      if (members) {
        members.delete(key);
        if (members.size === 0) this.byGrant.delete(payload.grantId);
      }
    }
  }

  revokeByGrantId(model, grantId) {
    for (const key of [...(this.byGrant.get(grantId) ?? [])]) {
      if (splitKey(key)[0] === model) this.delete(key);
    }
  }

  // Deletes a grant and every token issued under it; true if the grant existed.
  revokeGrant(grantId) {
    for (const key of [...(this.byGrant.get(grantId) ?? [])]) this.delete(key);
    const existed = this.entries.has(`Grant:${grantId}`);
    this.delete(`Grant:${grantId}`);
    return existed;
  }

  sweep() {
    const now = Date.now();
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt <= now) this.delete(key);
    }
    for (const [id, { expiresAt }] of this.consumedRefreshTokens) {
      if (expiresAt <= now) this.consumedRefreshTokens.delete(id);
    }
  }
}

function splitKey(key) {
  const at = key.indexOf(':');
  return [key.slice(0, at), key.slice(at + 1)];
}

const store = new Store();
setInterval(() => store.sweep(), 60_000).unref();

// Sequence number of the HTTP request being served. oidc-provider keeps the
// Koa ctx in AsyncLocalStorage (Provider.ctx); the front middleware numbers it.
function currentRequestSeq() {
  return Provider.ctx?.state.requestSeq;
}

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), payload, expiresIn);
  }

  async find(id) {
    const entry = store.get(this.key(id));
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUserCode(userCode) {
    const key = store.byUserCode.get(userCode);
    const entry = key && store.get(key);
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUid(uid) {
    const id = store.byUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const key = this.key(id);
    const entry = store.get(key);
    if (this.model !== 'RefreshToken') {
      if (entry) entry.payload.consumed = epochTime();
      return;
    }
    // oidc-provider checks "already consumed?" on the copy it found at the
    // start of the request and consumes near the end; two requests carrying
    // the same refresh token can interleave in between (it happens as soon
    // as the store is slow). Make the consume itself the atomic
    // check-and-set: the loser is treated exactly like a sequential reuse
    // (invalid_grant, whole grant revoked).
    if (!entry || entry.payload.consumed) {
      const grantId = entry?.payload.grantId ?? store.consumedRefreshTokens.get(id)?.grantId;
      store.delete(key);
      if (grantId && store.revokeGrant(grantId)) stats.grants_revoked += 1;
      if (store.consumedRefreshTokens.has(id)) throw new errors.InvalidGrant(REFRESH_TOKEN_REUSED);
      throw new errors.InvalidGrant('refresh token not found');
    }
    entry.payload.consumed = epochTime();
    store.consumedRefreshTokens.set(id, {
      by: currentRequestSeq(), grantId: entry.payload.grantId, expiresAt: entry.expiresAt,
    });
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    store.revokeByGrantId(this.model, grantId);
  }
}

// True when the refresh token this request presented has been consumed by a
// different request (earlier, or concurrently while this one was in flight).
function presentedRefreshTokenConsumedElsewhere(ctx) {
  const presented = ctx.oidc?.params?.refresh_token;
  if (typeof presented !== 'string') return false;
  const consumed = store.consumedRefreshTokens.get(presented);
  return consumed !== undefined && consumed.by !== ctx.state.requestSeq;
}

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------

const jwtClientJwks = JSON.parse(
  readFileSync(new URL('../fixtures/jwt-client.jwks.json', import.meta.url), 'utf8'),
);

// Native clients (RFC 8252 §7.3): a loopback redirect URI matches on any port, so
// `tokenwarden authorize` can listen on an ephemeral one.
const userClient = (extra) => ({
  application_type: 'native',
  grant_types: ['authorization_code', 'refresh_token'],
  redirect_uris: REDIRECT_URIS,
  response_types: ['code'],
  scope: ALL_SCOPES,
  ...extra,
});

const clients = [
  userClient({
    client_id: 'basic-client',
    client_secret: 'basic-secret',
    token_endpoint_auth_method: 'client_secret_basic',
  }),
  userClient({
    client_id: 'post-client',
    client_secret: 'post-secret',
    token_endpoint_auth_method: 'client_secret_post',
  }),
  userClient({
    client_id: 'jwt-client',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'RS256',
    jwks: jwtClientJwks,
  }),
  {
    client_id: 'cc-client',
    client_secret: 'cc-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'api:read api:write',
  },
  {
    client_id: 'introspector',
    client_secret: 'introspector-secret',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  },
];

const configuration = {
  adapter: MapAdapter,
  clients,
  // No `jwks`: oidc-provider signs ID tokens with its built-in development keys
  // (it warns on stderr). Do NOT generate a key here: on Node 20,
  // generateKeyPairSync() followed by keyObject.export({ format: 'jwk' }) can
  // deadlock the main thread when a GC runs during the export (seen here in
  // ~1 of 150 starts: KeyGenJob's destructor takes the mutex ExportJWK holds).
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: SCOPES,
  claims: { openid: ['sub'] },
  features: {
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Any authenticated client may introspect any token.
      allowedPolicy: async () => true,
    },
    revocation: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
    },
    devInteractions: { enabled: true },
    // Plain OAuth scopes (api:read, ...) travel in the grant's OIDC scope
    // list; no resource-server audiences to worry about.
    resourceIndicators: { enabled: false },
  },
  // Any account id exists.
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub }),
  }),
  rotateRefreshToken: () => true,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Refresh tokens live offline in the daemon: never bind them to a browser session.
  expiresWithSession: async () => false,
  ttl: {
    AccessToken: AT_TTL,
    ClientCredentials: AT_TTL,
    RefreshToken: RT_TTL,
    Grant: RT_TTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Session: RT_TTL,
  },
};

// ---------------------------------------------------------------------------
// HTTP: listen first (the issuer needs the real port), then build the provider.
// ---------------------------------------------------------------------------

const server = createServer();
server.on('error', (err) => {
  console.error(`oauth-server: ${err.message}`);
  process.exit(1);
});
await new Promise((resolve) => server.listen(PORT, HOST, resolve));
const { port } = server.address();
const issuer = `http://${HOST}:${port}`;

const provider = new Provider(issuer, configuration);

provider.on('grant.revoked', () => {
  stats.grants_revoked += 1;
});
// invalid_grant responses all say "grant request is invalid"; the precise
// reason ("refresh token already used", "refresh token not found", ...) is
// only on the error object as error_detail.
provider.on('grant.error', (ctx, err) => {
  ctx.state.grantErrorDetail = err.error_detail ?? err.error_description ?? err.message;
});
provider.on('server_error', (ctx, err) => {
  console.error(`oauth-server: server_error on ${ctx.method} ${ctx.path}:`, err);
});

const TOKEN_PATH = '/token';

function recordTokenRequest(ctx) {
  stats.token_requests += 1;
  const grantType = ctx.oidc?.params?.grant_type;
  const ok = ctx.status === 200;
  if (grantType === 'refresh_token') {
    if (ok) {
      stats.refresh_ok += 1;
    } else {
      stats.refresh_failed += 1;
    }
    // Counted whatever the outcome: with the atomic consume above a reuse
    // always fails, but the counter must not depend on that.
    if (presentedRefreshTokenConsumedElsewhere(ctx) || ctx.state.grantErrorDetail === REFRESH_TOKEN_REUSED) {
      stats.refresh_reuse += 1;
    }
  }
  if (DEBUG) {
    const detail = ok ? 'ok' : `${ctx.body?.error}: ${ctx.state.grantErrorDetail ?? ctx.body?.error_description}`;
    console.error(`oauth-server: token ${grantType ?? '?'} client=${ctx.oidc?.client?.clientId ?? '?'} -> ${ctx.status} ${detail}`);
  }
}

async function readJson(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  return JSON.parse(text);
}

function reply(ctx, status, body) {
  ctx.status = status;
  ctx.body = body;
}

async function mint(ctx) {
  let body;
  try {
    body = await readJson(ctx);
  } catch {
    return reply(ctx, 400, { error: 'invalid_request', error_description: 'body must be JSON' });
  }
  const clientId = body.client_id;
  const scope = body.scope ?? DEFAULT_MINT_SCOPE;
  const accountId = body.account_id ?? DEFAULT_ACCOUNT_ID;
  if (typeof clientId !== 'string' || typeof scope !== 'string' || typeof accountId !== 'string') {
    return reply(ctx, 400, { error: 'invalid_request', error_description: 'client_id (string) required; scope, account_id must be strings' });
  }
  const client = await provider.Client.find(clientId);
  if (!client) return reply(ctx, 400, { error: 'invalid_client', error_description: `unknown client ${clientId}` });
  if (!client.grantTypeAllowed('refresh_token')) {
    return reply(ctx, 400, { error: 'unauthorized_client', error_description: `${clientId} may not use refresh tokens` });
  }
  const requested = scope.split(' ').filter(Boolean);
  const allowed = new Set(client.scope.split(' '));
  const bad = requested.filter((s) => !allowed.has(s));
  if (requested.length === 0 || bad.length) {
    return reply(ctx, 400, { error: 'invalid_scope', error_description: `scope not allowed for ${clientId}: ${bad.join(' ') || '(empty)'}` });
  }
  const scopeString = requested.join(' ');

  // What the authorization-code flow would have produced after login+consent.
  const grant = new provider.Grant({ accountId, clientId });
  grant.addOIDCScope(scopeString);
  const grantId = await grant.save();

  const common = {
    accountId, client, grantId, gty: 'authorization_code', scope: scopeString,
  };
  const refreshToken = new provider.RefreshToken({
    ...common, authTime: epochTime(), expiresWithSession: false, rotations: 0,
  });
  const accessToken = new provider.AccessToken(common);

  return reply(ctx, 200, {
    refresh_token: await refreshToken.save(),
    access_token: await accessToken.save(),
    token_type: 'Bearer',
    expires_in: accessToken.expiration,
    scope: scopeString,
    grant_id: grantId,
    account_id: accountId,
  });
}

async function testRoutes(ctx) {
  const route = `${ctx.method} ${ctx.path}`;
  switch (route) {
    case 'POST /test/mint':
      return mint(ctx);
    case 'GET /test/stats':
      return reply(ctx, 200, stats);
    case 'POST /test/reset-stats':
      stats = zeroStats();
      return reply(ctx, 200, stats);
    default:
      return reply(ctx, 404, { error: 'not_found', error_description: `no test route ${route}` });
  }
}

let requestSeq = 0;

// provider.use() puts middleware in front of the provider's own router.
provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/test/')) {
    await testRoutes(ctx);
    return;
  }
  const isTokenRequest = ctx.method === 'POST' && ctx.path === TOKEN_PATH;
  requestSeq += 1;
  ctx.state.requestSeq = requestSeq;
  await next();
  if (isTokenRequest) recordTokenRequest(ctx);
});

server.on('request', provider.callback());

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

function shutdown() {
  server.closeAllConnections();
  server.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.OAUTH_SERVER_IGNORE_STDIN !== '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

writeStdout(JSON.stringify({
  issuer,
  port,
  token_url: `${issuer}${TOKEN_PATH}`,
  introspection_url: `${issuer}/token/introspection`,
  revocation_url: `${issuer}/token/revocation`,
  authorization_url: `${issuer}/auth`,
}));
