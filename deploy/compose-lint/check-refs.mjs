// What the Compose JSON schema cannot see (and `docker compose config` or `up` would):
// references between the parts of a compose file, and the repository files it mounts.
//   - depends_on names a service; `service_healthy` needs a healthcheck on that service,
//   - a service's secrets and named volumes are declared at the top level,
//   - relative bind-mount sources, secret files, build contexts and Dockerfiles exist
//     (`${VAR:-default}` taken as its default).
// Usage: node check-refs.mjs ../../docker-compose.yml
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';

const file = resolve(process.argv[2] ?? '../../docker-compose.yml');
const root = dirname(file);
const compose = parse(readFileSync(file, 'utf8'), { merge: true });
const services = compose.services ?? {};
const secrets = compose.secrets ?? {};
const volumes = compose.volumes ?? {};
const errors = [];

const withDefaults = (text) => text.replace(/\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}/g, '$1');
const mustExist = (where, path) => {
  if (!existsSync(resolve(root, withDefaults(path)))) errors.push(`${where}: ${path} does not exist`);
};

for (const [name, service] of Object.entries(services)) {
  const at = `services.${name}`;
  const dependsOn = Array.isArray(service.depends_on)
    ? Object.fromEntries(service.depends_on.map((d) => [d, { condition: 'service_started' }]))
    : service.depends_on ?? {};
  for (const [dep, { condition }] of Object.entries(dependsOn)) {
    if (!(dep in services)) errors.push(`${at}.depends_on: no service ${dep}`);
    else if (condition === 'service_healthy' && !services[dep].healthcheck) {
      errors.push(`${at}.depends_on.${dep}: service_healthy, but ${dep} has no healthcheck`);
    }
  }
  for (const secret of service.secrets ?? []) {
    const id = typeof secret === 'string' ? secret : secret.source;
    if (!(id in secrets)) errors.push(`${at}.secrets: ${id} is not declared under secrets`);
  }
  for (const volume of service.volumes ?? []) {
    const source = typeof volume === 'string' ? volume.split(':')[0] : volume.source;
    if (!source || (typeof volume !== 'string' && volume.type === 'tmpfs')) continue;
    if (/^\.\.?\//.test(source)) mustExist(`${at}.volumes`, source);
    else if (!source.startsWith('/') && !source.startsWith('~') && !(source in volumes)) {
      errors.push(`${at}.volumes: named volume ${source} is not declared under volumes`);
    }
  }
  if (service.build) {
    const context = typeof service.build === 'string' ? service.build : service.build.context ?? '.';
    mustExist(`${at}.build.context`, context);
    mustExist(`${at}.build.dockerfile`, resolve(root, context, service.build.dockerfile ?? 'Dockerfile'));
  } else if (!service.image) {
    errors.push(`${at}: neither image nor build`);
  }
}
for (const [id, secret] of Object.entries(secrets)) {
  if (secret.file) mustExist(`secrets.${id}.file`, secret.file);
}

for (const error of errors) console.error(`${file}: ${error}`);
console.log(`compose references: ${Object.keys(services).length} services, ${errors.length} errors`);
process.exitCode = errors.length > 0 ? 1 : 0;
