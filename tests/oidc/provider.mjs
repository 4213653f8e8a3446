// A real OpenID provider for the authentication tests: client-credentials clients whose access
// tokens are JWTs for the resource `fintech-serving`, signed with the keys in JWKS_FILE.
//   PORT=4010 JWKS_FILE=keys.json CLIENTS_FILE=clients.json node provider.mjs
import fs from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const jwks = JSON.parse(fs.readFileSync(process.env.JWKS_FILE, 'utf8'));
const clients = JSON.parse(fs.readFileSync(process.env.CLIENTS_FILE, 'utf8'));
const resource = 'urn:fintech-serving';
const ttl = Number(process.env.TOKEN_TTL_S || 300);

const provider = new Provider(issuer, {
  jwks,
  clients: clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: c.scope,
  })),
  scopes: ['inference', 'explain', 'admin'],
  ttl: { ClientCredentials: () => ttl },
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'inference explain admin',
        audience: 'fintech-serving',
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
