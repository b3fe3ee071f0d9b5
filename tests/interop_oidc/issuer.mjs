// An independent OAuth 2.0 authorization server for the interop tests: the npm
// `oidc-provider` package, with JWT access tokens (RFC 9068) for resource indicators
// (RFC 8707) and a small RFC 8693 token-exchange grant of ours.
//
//   node issuer.mjs CONFIG.json
//
// It listens on a free 127.0.0.1 port, then prints one JSON line {"issuer", "port"} on
// stdout. The issuer identifier depends on config.mount ("" or "/oidc") and
// config.trailing_slash. Everything it knows comes from the config file:
//
//   {"mount": "/oidc", "trailing_slash": false,
//    "app": {"client_id": "app", "redirect_uri": "http://127.0.0.1:1/cb"},
//    "agents": [{"client_id": "front", "resource": "http://127.0.0.1:9101",
//                "auth": "client_secret_basic", "client_secret": "...",
//                "jwks_uri": "...", "dependencies": ["http://127.0.0.1:9102"]}],
//    "resources": {"http://127.0.0.1:9101": "a.use b.call"},
//    "signing_key": {"kty": "EC", "crv": "P-256", "x": "...", "y": "...", "d": "..."}}
//
// The token exchange follows RFC 8693 §2.1-§2.2: an invalid subject or actor token is
// `invalid_request` (§2.2.2), a target the agent may not reach `invalid_target`, scopes
// beyond the subject's `invalid_scope`. The issued token keeps the user as `sub` and
// nests the previous actors under the new one in `act` (§4.1).

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { createLocalJWKSet, jwtVerify } from 'jose';
import Provider, { errors } from 'oidc-provider';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACTOR_SCOPE = 'actor';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// The signing key comes in the config (a P-256 private JWK): Node 20 can deadlock when a
// garbage collection lands while a key from generateKeyPairSync is exported as a JWK.
const signingKey = { ...config.signing_key, kid: 'interop-1', alg: 'ES256', use: 'sig' };
const { d: _private, ...publicKey } = signingKey;
const ownKeys = createLocalJWKSet({ keys: [publicKey] });

const agents = new Map(config.agents.map((agent) => [agent.client_id, agent]));
const resources = new Map(Object.entries(config.resources));

// Claims our grant adds to a token it issues (oidc-provider asks through extraTokenClaims).
const delegationClaims = new WeakMap();

class InvalidRequest extends errors.InvalidRequest {}

function agentClient(agent) {
  const client = {
    client_id: agent.client_id,
    grant_types: [TOKEN_EXCHANGE, 'client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: agent.auth,
  };
  if (agent.auth === 'private_key_jwt') {
    client.jwks_uri = agent.jwks_uri;
    client.token_endpoint_auth_signing_alg = 'ES256';
  } else {
    client.client_secret = agent.client_secret;
  }
  return client;
}

function resourceServer(indicator, issuer) {
  const jwt = { sign: { alg: 'ES256' } };
  if (indicator === issuer) {
    // The agents' own client-credentials tokens, sent back here as actor tokens.
    return { scope: ACTOR_SCOPE, audience: issuer, accessTokenFormat: 'jwt', accessTokenTTL: 300, jwt };
  }
  const scope = resources.get(indicator);
  if (scope === undefined) {
    throw new errors.InvalidTarget(`unknown resource ${indicator}`);
  }
  return { scope, audience: indicator, accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt };
}

async function verifyOwnToken(provider, token, what, options) {
  try {
    const { payload } = await jwtVerify(token, ownKeys, {
      issuer: provider.issuer,
      typ: 'at+jwt',
      algorithms: ['ES256'],
      ...options,
    });
    return payload;
  } catch (error) {
    throw new InvalidRequest(`${what} rejected: ${error.code || error.message}`);
  }
}

function one(ctx, name) {
  const value = ctx.oidc.params[name];
  if (Array.isArray(value)) {
    throw new InvalidRequest(`${name} must be sent once`);
  }
  return value;
}

async function tokenExchange(ctx) {
  const { provider, client } = ctx.oidc;
  const agent = agents.get(client.clientId);
  if (agent === undefined) {
    throw new errors.UnauthorizedClient('only registered agents may exchange tokens');
  }
  const subjectToken = one(ctx, 'subject_token');
  const subjectType = one(ctx, 'subject_token_type');
  if (!subjectToken || subjectType !== ACCESS_TOKEN_TYPE) {
    throw new InvalidRequest(`send subject_token with subject_token_type ${ACCESS_TOKEN_TYPE}`);
  }
  const actorToken = one(ctx, 'actor_token');
  const actorType = one(ctx, 'actor_token_type');
  if ((actorToken === undefined) !== (actorType === undefined)) {
    throw new InvalidRequest('send actor_token and actor_token_type together, or neither');
  }
  if (actorToken !== undefined) {
    if (![ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE].includes(actorType)) {
      throw new InvalidRequest('unsupported actor_token_type');
    }
    const actor = await verifyOwnToken(provider, actorToken, 'actor_token', { audience: provider.issuer });
    if (actor.sub !== client.clientId) {
      throw new InvalidRequest('actor_token names another client');
    }
  }
  // Audience chaining: an agent exchanges only tokens that were sent to it.
  const subject = await verifyOwnToken(provider, subjectToken, 'subject_token', { audience: agent.resource });

  let targets = ctx.oidc.params.resource;
  targets = targets === undefined ? [] : [].concat(targets);
  const audiences = ctx.oidc.params.audience;
  for (const name of audiences === undefined ? [] : [].concat(audiences)) {
    const named = agents.get(name);
    targets.push(named ? named.resource : name);
  }
  targets = [...new Set(targets)];
  if (targets.length !== 1) {
    throw new errors.InvalidTarget('name exactly one target in resource or audience');
  }
  const [target] = targets;
  if (!agent.dependencies.includes(target)) {
    throw new errors.InvalidTarget(`${client.clientId} may not call ${target}`);
  }
  const server = resourceServer(target, provider.issuer);

  const held = new Set(String(subject.scope || '').split(' ').filter(Boolean));
  const allowed = server.scope.split(' ').filter((s) => held.has(s));
  const requested = one(ctx, 'scope');
  let granted = allowed;
  if (requested !== undefined) {
    granted = requested.split(' ').filter(Boolean);
    const extra = granted.filter((s) => !allowed.includes(s));
    if (extra.length) {
      throw new errors.InvalidScope(`scope ${extra.join(' ')} may not be delegated`);
    }
  }
  if (!granted.length) {
    throw new errors.InvalidScope('nothing to delegate to this target');
  }

  // The delegation profile's claims: act levels name their issuer, txn spans the chain.
  const act = { sub: client.clientId, iss: provider.issuer };
  if (subject.act !== undefined) {
    act.act = subject.act;
  }
  const txn = typeof subject.txn === 'string' ? subject.txn : randomUUID().replaceAll('-', '');
  // Where the user came from (RFC 9493 iss_sub), kept unchanged from the first hop on.
  const subId = subject.sub_id !== undefined
    ? subject.sub_id
    : { format: 'iss_sub', iss: provider.issuer, sub: subject.sub };
  const now = Math.floor(Date.now() / 1000);
  const token = new provider.AccessToken({
    accountId: subject.sub,
    client,
    scope: granted.join(' '),
    gty: 'token_exchange',
    expiresIn: Math.max(1, Math.min(server.accessTokenTTL, subject.exp - now)),
  });
  token.resourceServer = {
    ...server,
    identifier: () => target,
  };
  delegationClaims.set(token, { act, txn, sub_id: subId });
  ctx.oidc.entity('AccessToken', token);
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope,
  };
}

function mountedIssuer(port) {
  const base = `http://127.0.0.1:${port}${config.mount || ''}`;
  return config.trailing_slash ? `${base}/` : base;
}

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = mountedIssuer(port);
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: config.app.client_id,
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: [config.app.redirect_uri],
      },
      ...config.agents.map(agentClient),
    ],
    jwks: { keys: [signingKey] },
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    enabledJWA: { clientAuthSigningAlgValues: ['ES256', 'RS256', 'EdDSA'] },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => resourceServer(indicator, issuer),
      },
    },
    // The agents publish their keys (jwks_uri) on loopback, which the provider's SSRF
    // guard refuses by default; this test server fetches them without that guard.
    fetch: (url, { dispatcher: _guard, ...options }) => globalThis.fetch(url, options),
    extraTokenClaims: async (_ctx, token) => delegationClaims.get(token),
    cookies: { keys: ['interop-cookie-key'] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    ttl: { Session: 600, Interaction: 600, Grant: 600, AuthorizationCode: 60 },
  });
  provider.registerGrantType(
    TOKEN_EXCHANGE,
    tokenExchange,
    ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'resource',
      'audience', 'scope', 'requested_token_type'],
    ['resource', 'audience'],
  );
  // Why a request failed, for the test's failure report (never a token: details only).
  for (const event of ['grant.error', 'authorization.error', 'server_error']) {
    provider.on(event, (_ctx, error) => {
      process.stderr.write(`${event}: ${error.error || error.name}: ${error.error_description || ''} ${error.error_detail || ''} ${error.cause?.message || ''}\n`);
    });
  }
  const prefix = new URL(issuer).pathname.replace(/\/$/, '');
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (prefix && !(req.url === prefix || req.url.startsWith(`${prefix}/`))) {
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    if (prefix) {
      req.originalUrl = req.url;
      req.url = req.url.slice(prefix.length) || '/';
    }
    callback(req, res);
  });
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
