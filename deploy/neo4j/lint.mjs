// Lints every Cypher statement under deploy/neo4j with Neo4j's own parser and semantic
// analysis (@neo4j-cypher/language-support), and fails on any error:
//   - each statement of the top-level *.cypher scripts (constraints, install, marking, uninstall),
//   - the trigger bodies inside apoc.trigger.install(...) strings, with the trigger
//     parameters declared,
//   - the relay's and backfill's own queries in queries/*.cypher.
// A canary (an undefined variable appended to each query) proves the analysis ran,
// since the analyser stays silent on some constructs.
// On top of the parser, structural checks assert what README.md ("Semantics this Cypher
// relies on") promises about the trigger bodies; each check first proves on a known-bad
// snippet that it fires:
//   - no per-row scan of transaction data (`x IN $deletedNodes`, filtered comprehensions),
//   - before phase: $deletedNodes / $deletedRelationships read once, into an id map,
//   - before phase: nothing but id() is applied to a relationship that may be deleted,
//     and no apoc.rel.* / apoc.any.* / apoc.node.* / apoc.trigger.to* call at all,
//   - events are collapsed per kind:key before versioning / publishing,
//   - before phase: the collapse gives a node upsert the captured labels of the group it lacks
//     (removed_labels), and the outbox entry carries removed_labels and changed,
//   - the cdcSkip opt-out is the first clause.
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
  'cdcNodeLabels', 'cdcRelTypes', 'cdcNodeKey', 'cdcRelKey', 'cdcRelMarker', 'cdcExcludeProps', 'cdcDb', 'cdcTopic',
];
const queryParameters = ['me', 'now', 'ttl', 'limit', 'ids', 'after', 'keys', 'id', 'error', 'epoch', 'rows'];

const schema = (parameters) => ({
  functions,
  procedures: { ...procedures, 'CYPHER 5': { ...procedures['CYPHER 5'], 'apoc.kafka.publish': kafkaPublish } },
  parameters: Object.fromEntries(parameters.map((p) => [p, null])),
  defaultLanguage: 'CYPHER 5',
});

let errors = 0;
let linted = 0;
let triggers = 0;

// id() is deprecated in Neo4j 5, but it is what the APOC trigger documentation applies to
// deleted entities in the 'before' phase (README.md); its warnings are counted, not printed.
const ID_DEPRECATION = /Function id is deprecated|'id' has been replaced/;
let idWarnings = 0;

function lint(where, query, parameters, { canary = true, allowId = false } = {}) {
  const dbSchema = schema(parameters);
  const { diagnostics } = lintCypherQuery(query, dbSchema);
  linted += 1;
  for (const d of diagnostics) {
    if (allowId && d.severity !== 1 && ID_DEPRECATION.test(d.message)) {
      idWarnings += 1;
      continue;
    }
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

// ---- structural checks on trigger bodies (see the header) ----

const TX_DATA = ['createdNodes', 'createdRelationships', 'deletedNodes', 'deletedRelationships',
  'removedLabels', 'removedNodeProperties', 'removedRelationshipProperties', 'assignedLabels',
  'assignedNodeProperties', 'assignedRelationshipProperties'];

/** The problems found in one trigger body; `phase` is the selector's phase. */
function structure(body, phase) {
  const problems = [];
  const code = body.split('\n').map((l) => l.replace(/\/\/.*$/, '')).join('\n');

  // Transaction data is iterated (UNWIND, or `[x IN $list | …]` without a filter), never
  // searched per row: `n IN $deletedNodes`, `any(x IN $list WHERE …)`, `[x IN $list WHERE …]`.
  const scan = new RegExp(`(\\S+)\\s+IN\\s+(?:coalesce\\(\\s*)?\\$(${TX_DATA.join('|')})\\b`, 'g');
  for (const m of code.matchAll(scan)) {
    const rest = code.slice(m.index + m[0].length);
    const bar = rest.indexOf('|');
    const iterated = /\[\w+$/.test(m[1]) && bar >= 0 && !/\bWHERE\b/i.test(rest.slice(0, bar));
    if (!iterated) problems.push(`per-row scan of $${m[2]}: \`${m[0].trim()}\` (build a lookup map once)`);
  }

  if (phase === 'before') {
    // The deleted entities are read once, into an id map, and nowhere else.
    for (const p of ['deletedNodes', 'deletedRelationships']) {
      const all = [...code.matchAll(new RegExp(`\\$${p}\\b`, 'g'))].length;
      const mapped = [...code.matchAll(new RegExp(`\\[(\\w+) IN \\$${p} \\| \\[toString\\(id\\(\\1\\)\\), true\\]\\]`, 'g'))].length;
      if (all !== 1 || mapped !== 1) problems.push(`$${p} must be read exactly once, as [x IN $${p} | [toString(id(x)), true]]`);
    }
    // Nothing that takes an entity which may be deleted.
    for (const m of code.matchAll(/apoc\.(?:rel|any|node|trigger\.to)[\w.]*\s*\(/g)) {
      problems.push(`\`${m[0]}\` in a 'before' trigger may be applied to a deleted entity`);
    }
    // A property entry's relationship is only given to id(), or filtered on the deleted-id map first.
    for (const m of code.matchAll(/\w+\.relationship\b/g)) {
      const around = code.slice(Math.max(0, m.index - 3), m.index + m[0].length + 60);
      const ok = around.startsWith('id(') || /^...\w+\.relationship AS (\w+) WHERE goneRels\[toString\(id\(\1\)\)\] IS NULL/.test(around);
      if (!ok) problems.push(`\`${m[0]}\` is used before the deleted-relationship filter`);
    }
    for (const m of code.matchAll(/\w+\.node\b/g)) {
      const around = code.slice(Math.max(0, m.index - 3), m.index + m[0].length + 60);
      const ok = around.startsWith('id(') || /^...\w+\.node AS (\w+) WHERE goneNodes\[toString\(id\(\1\)\)\] IS NULL/.test(around);
      if (!ok) problems.push(`\`${m[0]}\` is used before the deleted-node filter`);
    }
  }

  // One event per kind:key, before the version bump / the publish.
  const collapse = code.search(/WITH\b[^\n]*ev\.kind AS kind, ev\.key AS key, collect\(ev\) AS evs/);
  const sink = code.search(/MERGE \(v:CdcVersion|apoc\.kafka\.publish/);
  if (sink < 0 || collapse < 0 || collapse > sink) problems.push('events are not collapsed per kind:key before versioning / publishing');

  // Labels left behind (issue 12, item 3): the winning node upsert names the captured labels
  // of its group it lacks, and the outbox entry keeps them and the changed property names.
  if (phase === 'before') {
    if (!/WHEN kind = 'node' THEN up \{\.\*, removed_labels: \[l IN allLabels WHERE l IN \$cdcNodeLabels AND NOT l IN up\.labels\]\}/.test(code)) {
      problems.push('the collapse must set a node upsert\'s removed_labels from the labels of its group');
    }
    if (!/CREATE \(:CdcOutbox \{[^}]*removed_labels: ev\.removed_labels[^}]*changed: ev\.changed/.test(code)) {
      problems.push('the outbox entry must carry removed_labels and changed');
    }
  }

  // The opt-out comes first, so a skipped transaction runs nothing else.
  if (!/^WITH \$metaData AS md\s+WHERE coalesce\(md\.cdcSkip, false\) <> true\b/.test(code.trim())) {
    problems.push('the first clause must be the cdcSkip opt-out');
  }
  return problems;
}

// The checks must fire on what they forbid (like the canary for the parser).
{
  const good = "WITH $metaData AS md\nWHERE coalesce(md.cdcSkip, false) <> true\n"
    + "WITH apoc.map.fromPairs([d IN $deletedNodes | [toString(id(d)), true]]) AS goneNodes,\n"
    + "     apoc.map.fromPairs([r IN $deletedRelationships | [toString(id(r)), true]]) AS goneRels\n"
    + "UNWIND [] AS ev WITH ev.kind AS kind, ev.key AS key, collect(ev) AS evs\n"
    + "WITH kind, key, CASE WHEN kind = 'node' THEN up {.*, removed_labels: [l IN allLabels WHERE l IN $cdcNodeLabels AND NOT l IN up.labels]} END AS ev\n"
    + "MERGE (v:CdcVersion {key: key})\n"
    + "CREATE (:CdcOutbox {key: ev.key, removed_labels: ev.removed_labels, op: ev.op, changed: ev.changed})";
  const bad = {
    'per-row scan': good.replace('UNWIND []', 'UNWIND $createdNodes AS n WITH n WHERE NOT n IN $deletedNodes UNWIND []'),
    'filtered comprehension': good.replace('UNWIND []', 'WITH [x IN $removedNodeProperties[$k] WHERE x.node = 1 | x.old] AS o UNWIND []'),
    'second read of $deletedRelationships': good.replace('UNWIND []', 'UNWIND $deletedRelationships AS r UNWIND []'),
    'apoc.rel.* call': good.replace('UNWIND []', 'WITH apoc.rel.type(null) AS t UNWIND []'),
    'unfiltered .relationship': good.replace('UNWIND []', 'UNWIND $assignedRelationshipProperties.x AS e WITH type(e.relationship) AS t UNWIND []'),
    'unfiltered .node': good.replace('UNWIND []', 'UNWIND $assignedNodeProperties.x AS e WITH labels(e.node) AS t UNWIND []'),
    'no collapse': good.replace('collect(ev) AS evs', 'ev AS evs'),
    'labels left behind dropped in the collapse': good.replace('up {.*, removed_labels: [l IN allLabels WHERE l IN $cdcNodeLabels AND NOT l IN up.labels]}', 'up'),
    'no removed_labels in the outbox entry': good.replace('removed_labels: ev.removed_labels, ', ''),
    'no changed in the outbox entry': good.replace(', changed: ev.changed', ''),
    'no opt-out first': good.replace('WITH $metaData AS md\nWHERE coalesce(md.cdcSkip, false) <> true\n', ''),
  };
  if (structure(good, 'before').length !== 0) {
    errors += 1;
    console.log(`error: structural self-test: the good sample is flagged: ${structure(good, 'before')}`);
  }
  for (const [what, sample] of Object.entries(bad)) {
    if (structure(sample, 'before').length === 0) {
      errors += 1;
      console.log(`error: structural self-test: a sample with ${what} is not flagged`);
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
  for (const m of text.matchAll(/apoc\.trigger\.install\('[^']+', '([^']+)', "([\s\S]*?)", \{phase: '(\w+)'/g)) {
    lint(`${file} trigger ${m[1]}`, m[2], triggerParameters, { allowId: true });
    triggers += 1;
    for (const problem of structure(m[2], m[3])) {
      errors += 1;
      console.log(`error ${file} trigger ${m[1]}: ${problem}`);
    }
  }
}
if (triggers === 0) {
  errors += 1;
  console.log('error: no apoc.trigger.install body found (the extraction regex no longer matches)');
}

const queries = join(here, 'queries');
for (const file of readdirSync(queries).filter((f) => f.endsWith('.cypher')).sort()) {
  const text = readFileSync(join(queries, file), 'utf8')
    .replaceAll('__LABEL__', 'Chunk')
    .replaceAll('__RELATED__', 'Entity')
    .replaceAll('__KEY__', 'uuid')
    .replaceAll('__LEFT__', '-')
    .replaceAll('__RIGHT__', '->')
    .replaceAll('__REL__', 'MENTIONS')
    .replaceAll('__SORT__', 'name')
    .replaceAll('__PROP__', 'name');
  lint(`queries/${file}`, text.trim(), queryParameters);
}

if (idWarnings > 0) console.log(`note: ${idWarnings} id() deprecation warnings in trigger bodies not printed (intended, see README.md)`);
console.log(`cypher lint: ${linted} queries (${triggers} trigger bodies with structural checks), ${errors} errors`);
process.exitCode = errors > 0 ? 1 : 0;
