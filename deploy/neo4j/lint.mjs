// Lints every Cypher statement under deploy/neo4j with Neo4j's own parser and semantic
// analysis (@neo4j-cypher/language-support), and fails on any error:
//   - each statement of the top-level *.cypher scripts (constraints, install, uninstall),
//   - the trigger bodies inside apoc.trigger.install(...) strings, with the trigger
//     parameters declared,
//   - the relay's and backfill's own queries in queries/*.cypher.
// A canary (an undefined variable appended to each query) proves the analysis ran,
// since the analyser stays silent on some constructs.
// Usage: npm ci && node lint.mjs
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lintCypherQuery, testData } from '@neo4j-cypher/language-support';

const here = dirname(fileURLToPath(import.meta.url));
const { functions, procedures } = testData.mockSchema; // built-ins + APOC Core

// APOC Extended (direct mode) is not in the mock schema: declare its signature.
const kafkaPublish = {
  name: 'apoc.kafka.publish', description: 'Publish to Kafka (APOC Extended)',
  mode: 'READ', worksOnSystem: false, admin: false, option: { deprecated: false },
  signature: 'apoc.kafka.publish(topic :: STRING, payload :: ANY, config = {} :: MAP)',
  argumentDescription: [
    { name: 'topic', type: 'STRING', description: '', isDeprecated: false },
    { name: 'payload', type: 'ANY', description: '', isDeprecated: false },
    { name: 'config', type: 'MAP', description: '', isDeprecated: false, default: 'DefaultParameterValue{value={}, type=MAP}' },
  ],
  returnDescription: [],
};

const triggerParameters = [
  'transactionId', 'commitTime', 'createdNodes', 'createdRelationships', 'deletedNodes', 'deletedRelationships',
  'removedLabels', 'removedNodeProperties', 'removedRelationshipProperties', 'assignedLabels',
  'assignedNodeProperties', 'assignedRelationshipProperties', 'metaData', 'trigger',
  'cdcNodeLabels', 'cdcRelTypes', 'cdcNodeKey', 'cdcRelKey', 'cdcExcludeProps', 'cdcDb', 'cdcTopic',
];
const queryParameters = ['me', 'now', 'ttl', 'limit', 'ids', 'after', 'keys', 'id', 'error'];

const schema = (parameters) => ({
  functions,
  procedures: { ...procedures, 'CYPHER 5': { ...procedures['CYPHER 5'], 'apoc.kafka.publish': kafkaPublish } },
  parameters: Object.fromEntries(parameters.map((p) => [p, null])),
  defaultLanguage: 'CYPHER 5',
});

let errors = 0;
let linted = 0;

function lint(where, query, parameters, { canary = true } = {}) {
  const dbSchema = schema(parameters);
  const { diagnostics } = lintCypherQuery(query, dbSchema);
  linted += 1;
  for (const d of diagnostics) {
    const kind = d.severity === 1 ? 'error' : 'warning';
    if (d.severity === 1) errors += 1;
    console.log(`${kind} ${where}:${d.range.start.line + 1}:${d.range.start.character + 1} ${d.message}`);
  }
  if (canary) {
    const ran = lintCypherQuery(`${query}\nWITH 1 AS one RETURN undefinedCanary`, dbSchema)
      .diagnostics.some((d) => d.message.includes('undefinedCanary'));
    if (!ran) {
      errors += 1;
      console.log(`error ${where}: semantic analysis did not run (canary not reported)`);
    }
  }
}

/** Statements of a script: split at `;` that ends a line, comments dropped. */
function statements(text) {
  const code = text.split('\n').filter((l) => !l.trim().startsWith('//')).join('\n');
  return code.split(/;\s*(?:\n|$)/).map((s) => s.trim()).filter((s) => s.length > 0);
}

for (const file of readdirSync(here).filter((f) => f.endsWith('.cypher')).sort()) {
  const text = readFileSync(join(here, file), 'utf8');
  statements(text).forEach((statement, i) => {
    // Outer statements: a procedure call with a string argument; no canary (a CALL of a
    // VOID procedure cannot be followed by RETURN of an undefined variable usefully).
    lint(`${file}#${i + 1}`, statement, [], { canary: false });
  });
  for (const m of text.matchAll(/apoc\.trigger\.install\('[^']+', '([^']+)', "([\s\S]*?)", \{phase/g)) {
    lint(`${file} trigger ${m[1]}`, m[2], triggerParameters);
  }
}

const queries = join(here, 'queries');
for (const file of readdirSync(queries).filter((f) => f.endsWith('.cypher')).sort()) {
  const text = readFileSync(join(queries, file), 'utf8')
    .replaceAll('__LABEL__', 'Chunk')
    .replaceAll('__KEY__', 'uuid')
    .replaceAll('__LEFT__', '-')
    .replaceAll('__RIGHT__', '->')
    .replaceAll('__REL__', 'MENTIONS')
    .replaceAll('__SORT__', 'name')
    .replaceAll('__PROP__', 'name');
  lint(`queries/${file}`, text.trim(), queryParameters);
}

console.log(`cypher lint: ${linted} queries, ${errors} errors`);
process.exitCode = errors > 0 ? 1 : 0;
