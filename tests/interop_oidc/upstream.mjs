// A third-party OAuth 2.0 provider for the connections tests: the npm `oidc-provider`
// package as an upstream "GitHub-like" service that our token service connects users to.
//
//   node upstream.mjs CONFIG.json
//
// It listens on a free 127.0.0.1 port and prints one JSON line {"issuer", "port"}. It
// issues JWT access tokens (RFC 9068) for one API (the resource indicator), refresh
// tokens with rotation (a reused refresh token revokes the grant), and supports RFC 7009
// revocation. Sign-in and consent are oidc-provider's own development pages.
//
//   {"client": {"client_id": "sts", "client_secret": "...", "redirect_uri": "http://.../connections/callback"},
//    "api": "http://127.0.0.1:9300/", "scope": "repo read:user", "access_ttl": 120,
//    "signing_key": {"kty": "EC", "crv": "P-256", "x": "...", "y": "...", "d": "..."}}

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// The signing key comes in the config (see issuer.mjs for why it is not generated here).
const signingKey = { ...config.signing_key, kid: 'upstream-1', alg: 'ES256', use: 'sig' };

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const api = {
    scope: config.scope,
    audience: config.api,
    accessTokenFormat: 'jwt',
    accessTokenTTL: config.access_ttl,
    jwt: { sign: { alg: 'ES256' } },
  };
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: config.client.client_id,
        client_secret: config.client.client_secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: [config.client.redirect_uri],
      },
    ],
    jwks: { keys: [signingKey] },
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => config.api,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== config.api) {
            throw new Error(`unknown resource ${indicator}`);
          }
          return api;
        },
      },
    },
    // Every code grant of this client gets a refresh token (no offline_access needed),
    // and every refresh rotates it.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    cookies: { keys: ['upstream-cookie-key'] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    ttl: { Session: 600, Interaction: 600, Grant: 3600, AuthorizationCode: 60, RefreshToken: 3600 },
  });
  let refreshes = 0;
  provider.on('grant.success', (ctx) => {
    if (ctx.oidc.params.grant_type === 'refresh_token') {
      refreshes += 1;
    }
  });
  for (const event of ['grant.error', 'authorization.error', 'server_error', 'revocation.error']) {
    provider.on(event, (_ctx, error) => {
      process.stderr.write(`${event}: ${error.error || error.name}: ${error.error_description || ''}\n`);
    });
  }
  const callback = provider.callback();
  server.on('request', (req, res) => {
    // How many refresh grants succeeded: the tests count refreshes at the provider.
    if (req.url === '/test/refreshes') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ refreshes }));
      return;
    }
    callback(req, res);
  });
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
