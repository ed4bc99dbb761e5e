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
// Then the promises of README.md items 1, 2 and 5, checked on the flattened body and proved
// on mutations of the real outbox trigger (each must fire the check it is written for):
//   - item 1: after the kind:key grouping, the group's upsert is picked whenever it has one
//     (a delete only when `up IS NULL`), and every branch's events reach the grouping,
//   - item 2 (before phase): oldKeyById / relOldKeyById map every entity whose key was changed
//     or removed to its old key, and that key feeds a delete event when it differs from the
//     key now (or the key is gone),
//   - item 5 (before phase): the early exits: the node-delete branch is guarded by a captured
//     label in $removedLabels, the relationship branch filters on $cdcRelTypes before any other
//     work on r, the live-node branch filters on captured labels before serializing, the
//     relationship-delete branch filters the marker on $cdcRelTypes, and nothing is written
//     before the events are gathered except the marker of a captured relationship.
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

// ---- the promises of README.md items 1, 2 and 5 (see the header) ----

/** Comments dropped, whitespace runs as one space. */
function flatten(body) {
  return body.split('\n').map((l) => l.replace(/\/\/.*$/, '')).join('\n').replace(/\s+/g, ' ').trim();
}

/** `text` split at its top-level `seps` (words or punctuation), outside brackets, strings
 *  and nested CASE … END. */
function splitTop(text, seps) {
  const parts = [];
  const kinds = [];
  const word = (i, w) => text.startsWith(w, i) && !/\w/.test(text[i - 1] ?? ' ') && !/\w/.test(text[i + w.length] ?? ' ');
  let depth = 0;
  let from = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "'") {
      const close = text.indexOf("'", i + 1);
      i = close < 0 ? text.length : close + 1;
      continue;
    }
    if (word(i, 'CASE')) { depth += 1; i += 4; continue; }
    if (word(i, 'END')) { depth -= 1; i += 3; continue; }
    if ('([{'.includes(c)) depth += 1;
    else if (')]}'.includes(c)) depth -= 1;
    else if (depth === 0) {
      const sep = seps.find((s) => (/\w/.test(s) ? word(i, s) : text.startsWith(s, i)));
      if (sep) {
        parts.push(text.slice(from, i).trim());
        kinds.push(sep);
        i += sep.length;
        from = i;
        continue;
      }
    }
    i += 1;
  }
  parts.push(text.slice(from).trim());
  return { parts, kinds };
}

/** The `CALL (…) { … }` blocks: index of `CALL`, of `{` and of the matching `}`. */
function callBlocks(flat) {
  const blocks = [];
  for (const m of flat.matchAll(/CALL \([^)]*\) \{/g)) {
    const open = m.index + m[0].length - 1;
    let depth = 0;
    for (let i = open; i < flat.length; i += 1) {
      if (flat[i] === '{') depth += 1;
      else if (flat[i] === '}' && --depth === 0) {
        blocks.push({ start: m.index, open, end: i });
        break;
      }
    }
  }
  return blocks;
}

/** The innermost CALL block around index `at`, with its own body (nested blocks blanked,
 *  indexes kept), or null. */
function branchAt(flat, blocks, at) {
  if (at < 0) return null;
  const around = blocks.filter((b) => b.open < at && at < b.end);
  if (around.length === 0) return null;
  const b = around.reduce((x, y) => (y.open > x.open ? y : x));
  let own = flat.slice(b.open + 1, b.end);
  for (const n of blocks.filter((x) => x.start > b.open && x.end < b.end)) {
    own = own.slice(0, n.start - b.open - 1) + ' '.repeat(n.end - n.start + 1) + own.slice(n.end - b.open);
  }
  return { block: b, own };
}

/** Item 1: the expression the collapse makes `ev` of picks the group's upsert when there is one. */
function upsertWins(flat, problems) {
  const group = flat.search(/\bev\.kind AS kind, ev\.key AS key, collect\(ev\) AS evs\b/);
  if (group < 0) return; // reported by the collapse check
  const after = flat.slice(group);
  if (!/head\(\[(\w+) IN evs WHERE \1\.op = 'upsert'\]\) AS up\b/.test(after)) {
    problems.push("[upsert wins] the collapse must bind the group's upsert: head([e IN evs WHERE e.op = 'upsert']) AS up");
    return;
  }
  const as = after.search(/ AS ev\b/);
  const clause = after.lastIndexOf('WITH ', as);
  const items = splitTop(after.slice(clause + 5, as), [',']).parts;
  const pick = items[items.length - 1];
  if (/^coalesce\(up,/.test(pick)) return;
  const bad = (why) => problems.push(`[upsert wins] the collapse must pick \`up\` whenever the group has an upsert: ${why}`);
  if (!/^CASE .* END$/.test(pick)) { bad(`\`${pick.slice(0, 60)}\` is neither coalesce(up, …) nor a CASE`); return; }
  const { parts, kinds } = splitTop(pick.slice(4, -3), ['WHEN', 'THEN', 'ELSE']);
  if (parts[0] !== '') { bad('a simple CASE (CASE x WHEN …) is not understood'); return; }
  let otherwise = null;
  for (let k = 0; k < kinds.length; k += 1) {
    if (kinds[k] === 'WHEN' && kinds[k + 1] === 'THEN') {
      const [when, then] = [parts[k + 1], parts[k + 2]];
      if (!/^up\b/.test(then) && when !== 'up IS NULL') bad(`\`WHEN ${when} THEN ${then.slice(0, 30)}\` picks another event when an upsert may exist`);
    } else if (kinds[k] === 'ELSE') otherwise = parts[k + 1];
  }
  if (otherwise === null || !/^up\b/.test(otherwise)) bad(`the ELSE branch must be \`up\` (is \`${otherwise}\`)`);
}

/** Item 1: every branch's events (`… AS xEvents`) are in the list the collapse unwinds. */
function everyBranchCollapsed(flat, problems) {
  const defined = new Set([...flat.matchAll(/\bAS (\w+Events)\b/g)].map((m) => m[1]));
  const sum = flat.match(/WITH ((?:\w+ \+ )*\w+) AS events\b[^]*? UNWIND events AS ev\b/);
  if (!sum) {
    problems.push('[branches] the events must be gathered as `WITH a + b + … AS events` then `UNWIND events AS ev`');
    return;
  }
  const used = sum[1].split(' + ');
  for (const name of defined) {
    if (!used.includes(name)) problems.push(`[branches] the events of ${name} never reach the collapse`);
  }
}

/** Item 2: the old-key maps, and the deletes they feed. */
function oldKeysDeleted(flat, problems) {
  const map = (entries, param, entity, name) => new RegExp(
    `UNWIND coalesce\\(\\$assigned${entries}Properties\\[\\$${param}\\], \\[\\]\\) \\+ coalesce\\(\\$removed${entries}Properties\\[\\$${param}\\], \\[\\]\\) AS (\\w+) `
    + 'WITH \\1 WHERE \\1\\.old IS NOT NULL AND \\(\\1\\.new IS NULL OR toString\\(\\1\\.old\\) <> toString\\(\\1\\.new\\)\\) '
    + `WITH collect\\(\\[toString\\(id\\(\\1\\.${entity}\\)\\), \\1\\.old\\]\\) AS (\\w+) RETURN apoc\\.map\\.fromPairs\\(\\2\\) AS ${name}\\b`,
  );
  for (const [entries, param, entity, name] of [['Node', 'cdcNodeKey', 'node', 'oldKeyById'], ['Relationship', 'cdcRelKey', 'relationship', 'relOldKeyById']]) {
    if (!map(entries, param, entity, name).test(flat)) {
      problems.push(`[old key] ${name} must map every ${entity} whose $${param} was changed or removed (assigned and removed entries, old set, new absent or different) to its old key`);
    }
  }
  // The delete event of each kind, and the condition it is built under.
  const deleteOf = (kind, key) => {
    const m = flat.match(new RegExp(`CASE WHEN ([^{}]*?) THEN \\{ kind: '${kind}', key: ${key.replace(/[()]/g, '\\$&')}, [^{}]*?op: 'delete'`));
    return m ? m[1] : null;
  };
  const node = deleteOf('node', 'toString(prevKey)');
  if (!/\boldKeyById\[nid\] AS oldKey\b/.test(flat) || !/\bcoalesce\(oldKey, curKey\) AS prevKey\b/.test(flat)) {
    problems.push("[old key] a live node's prevKey must be its old key from oldKeyById (coalesce(oldKey, curKey))");
  }
  if (node === null) problems.push("[old key] no node delete event keyed by toString(prevKey)");
  else if (!['prevKey IS NOT NULL', 'curKey IS NULL', 'toString(prevKey) <> toString(curKey)'].every((t) => node.includes(t))) {
    problems.push(`[old key] the node delete must be emitted when the key changed or was removed (prevKey set, curKey null or different): \`${node}\``);
  }
  if (!/\bcoalesce\(\w+\[0\], toString\(relOldKeyById\[toString\(id\(r\)\)\]\)\) AS prevKey\b/.test(flat)) {
    problems.push("[old key] a relationship's prevKey must be its marker's key, else its old key from relOldKeyById");
  }
  const rel = deleteOf('relationship', 'prevKey');
  if (rel === null) problems.push('[old key] no relationship delete event keyed by prevKey');
  else if (!['prevKey IS NOT NULL', 'k IS NULL', 'prevKey <> k'].every((t) => rel.includes(t))) {
    problems.push(`[old key] the relationship delete must be emitted when its key changed or was removed (prevKey set, k null or different): \`${rel}\``);
  }
}

/** Item 5: the early exits of each branch, and no write before the events are gathered
 *  other than the marker of a captured relationship. */
function earlyExits(flat, problems) {
  const blocks = callBlocks(flat);
  const before = (own, first, then) => {
    const f = own.search(first);
    const t = own.search(then);
    return f >= 0 && (t < 0 || f < t);
  };
  // Deleted nodes: nothing unless a captured label was removed.
  const deleted = branchAt(flat, blocks, flat.search(/WHERE goneNodes\[[^\]]+\](?! IS NULL)/));
  if (!deleted || !before(deleted.own, /WHERE any\((\w+) IN \$cdcNodeLabels WHERE \$removedLabels\[\1\] IS NOT NULL\)/, /\bUNWIND\b/)) {
    problems.push('[early exit] the node-delete branch must start with WHERE any(l IN $cdcNodeLabels WHERE $removedLabels[l] IS NOT NULL)');
  }
  // Live relationships: the type filter before anything else is done with r.
  const rels = branchAt(flat, blocks, flat.indexOf('startNode('));
  if (!rels || !before(rels.own, /WHERE type\((\w+)\) IN \$cdcRelTypes/, /startNode\(|endNode\(|properties\(|apoc\.convert|\bSET\b/)) {
    problems.push('[early exit] the relationship branch must filter on WHERE type(r) IN $cdcRelTypes before any other work on r');
  }
  // Live nodes: the captured-label filter before serializing.
  const nodes = branchAt(flat, blocks, flat.search(/apoc\.convert\.toJson\(apoc\.map\.removeKeys\(properties\(n\)/));
  if (!nodes || !/\[(\w+) IN lbls WHERE \1 IN \$cdcNodeLabels\] AS nowIn\b/.test(nodes.own)
      || !before(nodes.own, /WHERE size\(nowIn\) > 0 OR size\(wasIn\) > 0/, /properties\(n\)/)) {
    problems.push('[early exit] the live-node branch must keep only nodes with a captured label (now or before) before serializing them');
  }
  // Deleted relationships: the marker's type filtered before any event is built.
  const gone = branchAt(flat, blocks, flat.indexOf('$removedRelationshipProperties[$cdcRelMarker]'));
  if (!gone || !before(gone.own, /WHERE (?:(?!\b(?:WITH|RETURN|UNWIND)\b).)*?\bIN \$cdcRelTypes/, /\bcollect\(/)) {
    problems.push('[early exit] the relationship-delete branch must filter the marker on $cdcRelTypes before building events');
  }
  // No write before the events are gathered, but the marker of a captured relationship.
  const gathered = flat.search(/\bUNWIND events AS ev\b/);
  for (const m of flat.matchAll(/\b(?:CREATE|MERGE|SET|DELETE|REMOVE)\b/g)) {
    if (gathered >= 0 && m.index > gathered) continue;
    const where = branchAt(flat, blocks, m.index);
    if (!rels || !where || where.block !== rels.block) {
      problems.push(`[early exit] \`${flat.slice(m.index, m.index + 30)}…\` writes before the events are gathered (only the marker of a captured relationship may)`);
    }
  }
}

/** The problems found with the promises of items 1, 2 and 5 in one trigger body. */
function promises(body, phase) {
  const problems = [];
  const flat = flatten(body);
  upsertWins(flat, problems);
  everyBranchCollapsed(flat, problems);
  if (phase === 'before') {
    oldKeysDeleted(flat, problems);
    earlyExits(flat, problems);
  }
  return problems;
}

// Each promise check must fire on a mutation of the real outbox trigger that breaks it.
{
  const text = readFileSync(join(here, 'outbox-trigger.cypher'), 'utf8');
  const body = text.match(/apoc\.trigger\.install\('[^']+', '[^']+', "([\s\S]*?)", \{phase: 'before'/)?.[1] ?? '';
  const mutations = [
    ['the delete binds as up', "WHERE e.op = 'upsert']) AS up", "WHERE e.op = 'delete']) AS up", /\[upsert wins\]/],
    ['a delete picked while an upsert exists', 'WHEN up IS NULL THEN', "WHEN up IS NULL OR kind = 'relationship' THEN", /\[upsert wins\]/],
    ['the first event in the ELSE branch', 'ELSE up\n', 'ELSE firstEv\n', /\[upsert wins\]/],
    ['no ELSE branch (relationship upserts become null)', 'ELSE up\n', '', /\[upsert wins\]/],
    ['the node deletes not collapsed', 'nodeEvents + delNodeEvents + ', 'nodeEvents + ', /\[branches\] .*delNodeEvents/],
    ['key removals missing from oldKeyById', ' + coalesce($removedNodeProperties[$cdcNodeKey], []) AS e', ' AS e', /\[old key\] oldKeyById/],
    ['removed keys dropped from oldKeyById', '(e.new IS NULL OR toString(e.old) <> toString(e.new))', 'toString(e.old) <> toString(e.new)', /\[old key\] oldKeyById/],
    ['key removals missing from relOldKeyById', ' + coalesce($removedRelationshipProperties[$cdcRelKey], [])', '', /\[old key\] relOldKeyById/],
    ["a node's prevKey without the old key", 'coalesce(oldKey, curKey) AS prevKey', 'curKey AS prevKey', /\[old key\] a live node's prevKey/],
    ['the node delete keyed by the new key', "key: toString(prevKey), labels: [l IN lbls", "key: toString(curKey), labels: [l IN lbls", /\[old key\] no node delete/],
    ['no node delete on a key change', ' OR toString(prevKey) <> toString(curKey)', '', /\[old key\] the node delete/],
    ["a relationship's prevKey without its old key", 'coalesce(stamp[0], toString(relOldKeyById[toString(id(r))])) AS prevKey', 'stamp[0] AS prevKey', /\[old key\] a relationship's prevKey/],
    ['no relationship delete on a key change', 'prevKey IS NOT NULL AND (k IS NULL OR prevKey <> k)', 'prevKey IS NOT NULL AND k IS NULL', /\[old key\] the relationship delete/],
    ['no guard on the node-delete branch', '  WHERE any(l IN $cdcNodeLabels WHERE $removedLabels[l] IS NOT NULL)\n', '', /\[early exit\] the node-delete/],
    ['r read before the type filter', 'WITH relOldKeyById, r\n  WHERE type(r)', 'WITH relOldKeyById, startNode(r) AS s0, r\n  WHERE type(r)', /\[early exit\] the relationship branch/],
    ['no captured-label filter before serializing', '  WHERE size(nowIn) > 0 OR size(wasIn) > 0\n', '', /\[early exit\] the live-node/],
    ['no type filter on deleted relationships', 'WHERE size(s) = 4 AND s[1] IN $cdcRelTypes', 'WHERE size(s) = 4', /\[early exit\] the relationship-delete/],
    ['a write on every touched node', '  WITH gainedById, lostById, changedById, oldKeyById, n,', '  SET n._seen = true\n  WITH gainedById, lostById, changedById, oldKeyById, n,', /\[early exit\] `SET n\._seen/],
  ];
  for (const [what, from, to, expected] of mutations) {
    const sample = body.replace(from, to);
    if (sample === body) {
      errors += 1;
      console.log(`error: promise self-test: the mutation "${what}" no longer applies to outbox-trigger.cypher (update the self-test)`);
    } else if (!promises(sample, 'before').some((p) => expected.test(p))) {
      errors += 1;
      console.log(`error: promise self-test: a trigger with ${what} is not flagged (${expected}): ${promises(sample, 'before').join('; ') || 'no problem found'}`);
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
    for (const problem of [...structure(m[2], m[3]), ...promises(m[2], m[3])]) {
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
