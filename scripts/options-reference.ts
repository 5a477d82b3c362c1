// docs/options.md from the TSDoc of the option types: each option's type, default, example, and the TypeError a bad value really gets;
// and the README's table of every option with its default (npm run docs:options).

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { Registry } from 'prom-client';
import ts from 'typescript';
import {
  type AuditOptions,
  type CloseOptions,
  type FeatureOptions,
  type IdempotencyKeyOptions,
  type KanaMeterOptions,
  kanaMeter,
  meter,
  type ReadyOptions,
  type RetryOptions,
  type SpoolOptions,
} from '../src/index.js';
import { type OpenTelemetryOptions, openTelemetry } from '../src/integrations/opentelemetry.js';
import { type PrometheusMetricsOptions, prometheusMetrics } from '../src/integrations/prometheus.js';
import { parseOptions } from '../src/options.js';
import { MemoryStore, type MemoryStoreOptions } from '../src/stores/memory-store.js';
import { RedisStore, type RedisStoreOptions } from '../src/stores/redis-store.js';
import { entrySourceFile, readCompilerOptions } from './compiler-options.js';
import { Slugs } from './heading-anchors.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const OPTIONS_REFERENCE = 'docs/options.md';

/** A realistic mistake for every option of a type: the compiler says when an option has none. */
type BadValues<T> = { readonly [K in keyof Required<T>]: unknown };

/** One options type, documented in one section. */
interface OptionGroup {
  readonly title: string;
  /** The public entry that exports the type, and its name there. */
  readonly entry: string;
  readonly typeName: string;
  /** Put before each option's name in its heading: `retry.` gives `retry.retries`. */
  readonly prefix: string;
  /** An option as the README's summary names it, where the heading alone is ambiguous: `meter({ delta })`. */
  readonly summaryName?: (name: string) => string;
  /** Other exported types whose TSDoc introduces the section, and which link to it where an option's type names them. */
  readonly seeAlso?: readonly string[];
  readonly badValues: Readonly<Record<string, unknown>>;
  /** What the parser gives each option left out: a literal `@default` (`1000`, `'allow'`, `{ a: 1 }`) must equal it. */
  readonly defaults?: () => Readonly<Record<string, unknown>>;
  /** The code a user writes with a bad value, as the docs show it; `attempt` makes that call (with what it requires besides). */
  readonly shown: (name: string, value: unknown) => string;
  /** Resolves with what the call throws, or undefined when it accepted the value. */
  readonly attempt: (name: string, value: unknown) => Promise<unknown>;
}

/** The options every kanaMeter() call below passes besides the one shown. */
const REQUIRED = { apiKey: 'prv_test_optionsReference', userId: () => undefined };

/** kanaMeter() with one option part replaced; closes what it created if the value was accepted. */
async function attemptKanaMeter(options: Record<string, unknown>): Promise<unknown> {
  try {
    const kana = kanaMeter({ ...REQUIRED, ...options } as KanaMeterOptions);
    await kana.close({ timeoutMs: 0 });
    return undefined;
  } catch (error) {
    return error;
  }
}

async function attempt(call: () => unknown): Promise<unknown> {
  try {
    await call();
    return undefined;
  } catch (error) {
    return error;
  }
}

/** A nested options object of kanaMeter(), e.g. `retry: { retries: -1 }`; `base` holds what it also needs. */
function nestedGroup(
  title: string,
  typeName: string,
  option: string,
  badValues: Readonly<Record<string, unknown>>,
  base: Record<string, unknown> = {},
  defaults?: OptionGroup['defaults'],
): OptionGroup {
  const part = (name: string, value: unknown) => ({ [option]: { ...base, [name]: value } });
  return {
    title,
    entry: 'kana-meter',
    typeName,
    prefix: `${option}.`,
    badValues,
    ...(defaults && { defaults }),
    shown: (name, value) => properties(part(name, value)),
    attempt: (name, value) => attemptKanaMeter(part(name, value)),
  };
}

/**
 * The documented option types, in the order of the reference. A new options type (a store's, say)
 * is one more entry here.
 */
export const OPTION_GROUPS: readonly OptionGroup[] = [
  {
    title: 'kanaMeter(options)',
    entry: 'kana-meter',
    typeName: 'KanaMeterOptions',
    prefix: '',
    badValues: {
      apiKey: 42,
      endpoint: 'api.usekana.com/graphql',
      client: { apiKey: 'prv_live_...' },
      userId: 'user-id',
      routes: { '/api/search': 'api-calls' },
      isSuccess: true,
      mutation: 'recordUsageEvent',
      timeoutMs: '10s',
      retry: 5,
      flushInterval: '1s',
      concurrency: 0,
      onDeliveryFailure: 'log',
      maxPendingKeys: 0,
      spool: './kana-usage.spool',
      onDrop: 'log',
      enforce: 'on',
      onDenied: 402,
      onKanaError: 'fail',
      staleIfError: -1,
      checkConcurrency: 0,
      checkTimeoutMs: 0,
      entitlementTtl: '30s',
      maxEntitlements: 0,
      rateLimitHeaders: 'false',
      idempotencyKey: 'Idempotency-Key',
      logger: 'info',
      metrics: 'prometheus',
      fetch: 'fetch',
      store: 'redis://localhost:6379',
      anonymous: 'deny',
      onConfigError: 'fail',
      audit: './usage.audit.jsonl',
    } satisfies BadValues<KanaMeterOptions>,
    defaults: () => {
      // The client's options are parsed into its settings; those REQUIRED sets have no default to check.
      const { client, ...config } = parseOptions(REQUIRED);
      const parsed: Record<string, unknown> = { ...(client as object), ...config };
      for (const name of Object.keys(REQUIRED)) delete parsed[name];
      return parsed;
    },
    shown: (name, value) => properties({ [name]: value }),
    attempt: (name, value) => attemptKanaMeter({ [name]: value }),
  },
  nestedGroup(
    'retry',
    'RetryOptions',
    'retry',
    {
      retries: 1.5,
      minTimeout: -100,
      maxTimeout: 10,
      factor: 0.5,
      randomize: 'yes',
    } satisfies BadValues<RetryOptions>,
    {},
    () => parseOptions(REQUIRED).retry,
  ),
  nestedGroup('spool', 'SpoolOptions', 'spool', { path: '', writeAhead: 'yes' } satisfies BadValues<SpoolOptions>, {
    path: './kana-usage.spool',
  }),
  nestedGroup('idempotencyKey', 'IdempotencyKeyOptions', 'idempotencyKey', {
    header: 'Idempotency Key',
    ttlMs: '24h',
    maxKeys: 0,
    maxBytes: '64MB',
  } satisfies BadValues<IdempotencyKeyOptions>),
  nestedGroup(
    'audit',
    'AuditOptions',
    'audit',
    { path: '', maxBytes: '64MiB', maxFiles: 0 } satisfies BadValues<AuditOptions>,
    { path: './usage.audit.jsonl' },
    () => parseOptions({ ...REQUIRED, audit: { path: './usage.audit.jsonl' } }).audit ?? {},
  ),
  {
    title: 'meter(feature, options) and route map entries',
    entry: 'kana-meter',
    typeName: 'FeatureOptions',
    prefix: '',
    seeAlso: ['RouteMap', 'RouteTarget'],
    summaryName: (name) => `meter({ ${name} })`,
    badValues: { delta: 0, enforce: 'shadow-mode', billAborted: 'yes' } satisfies BadValues<FeatureOptions>,
    shown: (name, value) => `meter('reports', ${literal({ [name]: value })})`,
    attempt: (name, value) => attempt(() => meter('reports', { [name]: value })),
  },
  {
    title: 'kana.close(options)',
    entry: 'kana-meter',
    typeName: 'CloseOptions',
    prefix: '',
    summaryName: (name) => `kana.close({ ${name} })`,
    badValues: { timeoutMs: '10s' } satisfies BadValues<CloseOptions>,
    shown: (name, value) => `kana.close(${literal({ [name]: value })})`,
    attempt: (name, value) => attempt(() => kanaMeter(REQUIRED).close({ [name]: value } as CloseOptions)),
  },
  {
    title: 'kana.ready(options)',
    entry: 'kana-meter',
    typeName: 'ReadyOptions',
    prefix: '',
    summaryName: (name) => `kana.ready({ ${name} })`,
    badValues: { timeoutMs: 0 } satisfies BadValues<ReadyOptions>,
    shown: (name, value) => `kana.ready(${literal({ [name]: value })})`,
    attempt: (name, value) => attempt(() => kanaMeter(REQUIRED).ready({ [name]: value } as ReadyOptions)),
  },
  {
    title: 'prometheusMetrics(options)',
    entry: 'kana-meter/prometheus',
    typeName: 'PrometheusMetricsOptions',
    prefix: '',
    summaryName: (name) => `prometheusMetrics({ ${name} })`,
    badValues: {
      register: 'default',
      prefix: 'kana-meter_',
      buckets: [1, 0.5, 2],
    } satisfies BadValues<PrometheusMetricsOptions>,
    shown: (name, value) => `prometheusMetrics(${literal({ [name]: value })})`,
    attempt: (name, value) => attempt(() => prometheusMetrics({ register: new Registry(), [name]: value })),
  },
  {
    title: 'new RedisStore(options)',
    entry: 'kana-meter/redis',
    typeName: 'RedisStoreOptions',
    prefix: '',
    summaryName: (name) => `new RedisStore({ ${name} })`,
    badValues: {
      sendCommand: 'redis://localhost:6379',
      prefix: 7,
      timeoutMs: '500ms',
      leaseMs: 50,
      maxBlock: 0,
      retainMs: 1000,
    } satisfies BadValues<RedisStoreOptions>,
    shown: (name, value) =>
      name === 'sendCommand'
        ? `new RedisStore(${literal({ [name]: value })})`
        : `new RedisStore({ sendCommand, ${properties({ [name]: value })} })`,
    attempt: (name, value) =>
      attempt(() => new RedisStore({ sendCommand: () => 'OK', [name]: value } as RedisStoreOptions)),
  },
  {
    title: 'new MemoryStore(options)',
    entry: 'kana-meter',
    typeName: 'MemoryStoreOptions',
    prefix: '',
    summaryName: (name) => `new MemoryStore({ ${name} })`,
    badValues: {
      leaseMs: '10s',
      maxBlock: 0,
      retainMs: 10,
      now: 1_700_000_000_000,
    } satisfies BadValues<MemoryStoreOptions>,
    shown: (name, value) => `new MemoryStore(${literal({ [name]: value })})`,
    attempt: (name, value) => attempt(() => new MemoryStore({ [name]: value })),
  },
  {
    title: 'openTelemetry(options)',
    entry: 'kana-meter/opentelemetry',
    typeName: 'OpenTelemetryOptions',
    prefix: '',
    summaryName: (name) => `openTelemetry({ ${name} })`,
    badValues: {
      meterProvider: 'global',
      tracerProvider: { tracer: 'kana-meter' },
      recordUserId: 'yes',
    } satisfies BadValues<OpenTelemetryOptions>,
    shown: (name, value) => `openTelemetry(${literal({ [name]: value })})`,
    attempt: (name, value) => attempt(() => openTelemetry({ [name]: value })),
  },
];

/** One option as its TSDoc describes it. */
interface OptionDoc {
  readonly name: string;
  readonly optional: boolean;
  readonly type: string;
  readonly description: string;
  readonly defaults: readonly string[];
  readonly examples: readonly string[];
}

/** The declaration of a type a public entry exports. */
function exportedDeclaration(program: ts.Program, file: string, typeName: string): ts.Declaration {
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file);
  const module = source && checker.getSymbolAtLocation(source);
  let symbol = module && checker.getExportsOfModule(module).find((exported) => exported.name === typeName);
  if (symbol && symbol.flags & ts.SymbolFlags.Alias) symbol = checker.getAliasedSymbol(symbol);
  const declaration = symbol?.declarations?.[0];
  if (!declaration) throw new Error(`${file} does not export ${typeName}`);
  return declaration;
}

/** The members of an exported interface, in declaration order, with their TSDoc. */
function readOptionDocs(
  program: ts.Program,
  file: string,
  typeName: string,
): { description: string; options: OptionDoc[] } {
  const declaration = exportedDeclaration(program, file, typeName);
  if (!ts.isInterfaceDeclaration(declaration)) throw new Error(`${typeName} is not an interface`);
  const options = declaration.members.filter(ts.isPropertySignature).map((member) => {
    const tags = ts.getJSDocTags(member);
    const tagTexts = (name: string) =>
      tags.filter((tag) => tag.tagName.text === name).map((tag) => ts.getTextOfJSDocComment(tag.comment)?.trim() ?? '');
    return {
      name: member.name.getText(),
      optional: member.questionToken !== undefined,
      type: (member.type?.getText() ?? 'unknown').replace(/\s+/g, ' ').replace(/\( /g, '(').replace(/,? \)/g, ')'),
      description: jsDocText(member),
      defaults: tagTexts('default'),
      examples: tagTexts('example'),
    };
  });
  return { description: jsDocText(declaration), options };
}

/** A type's TSDoc as a paragraph of the section that introduces it: its description and examples. */
function typeIntro(program: ts.Program, file: string, typeName: string): string {
  const declaration = exportedDeclaration(program, file, typeName);
  const examples = ts
    .getJSDocTags(declaration)
    .filter((tag) => tag.tagName.text === 'example')
    .map((tag) => ` Example: ${code(ts.getTextOfJSDocComment(tag.comment)?.trim() ?? '')}`);
  return `\`${typeName}\`: ${jsDocText(declaration)}${examples.join('')}`;
}

function jsDocText(node: ts.Node): string {
  return ts
    .getJSDocCommentsAndTags(node)
    .filter(ts.isJSDoc)
    .map((doc) => ts.getTextOfJSDocComment(doc.comment)?.trim() ?? '')
    .join('\n')
    .trim();
}

export interface OptionsReference {
  readonly markdown: string;
  /** Every option and its default, linked to the reference: the README's table between OPTIONS_SUMMARY_MARKERS. */
  readonly summary: string;
  /** What the TSDoc or the validation lacks, e.g. `CloseOptions.timeoutMs: no @example`. */
  readonly gaps: readonly string[];
}

export async function renderOptionsReference(): Promise<OptionsReference> {
  const compilerOptions = readCompilerOptions(ROOT);
  const entries = new Map(
    OPTION_GROUPS.map((group) => [group.entry, entrySourceFile(ROOT, compilerOptions, group.entry)]),
  );
  const program = ts.createProgram({ rootNames: [...entries.values()], options: { ...compilerOptions, noEmit: true } });
  const gaps: string[] = [];
  const groups = OPTION_GROUPS.map((group) => ({
    group,
    ...readOptionDocs(program, entries.get(group.entry) as string, group.typeName),
  }));
  // Anchors in the order of the headings, as GitHub numbers repeated ones.
  const slugs = new Slugs();
  slugs.of('Options reference');
  const anchors = groups.map(({ group, options }) => ({
    group: slugs.of(group.title),
    options: options.map((option) => slugs.of(`${group.prefix}${option.name}`)),
  }));
  const anchorOfType = new Map(
    groups.flatMap(({ group }, i) =>
      [group.typeName, ...(group.seeAlso ?? [])].map((typeName) => [typeName, anchors[i]?.group as string] as const),
    ),
  );

  const toc: string[] = [];
  const sections: string[] = [];
  const summaryCells: [string, string][] = [];
  for (const [i, { group, description, options }] of groups.entries()) {
    const defaults = group.defaults?.();
    const names = new Set(options.map((option) => option.name));
    const unknown = Object.keys(group.badValues).filter((name) => !names.has(name));
    if (unknown.length > 0)
      throw new Error(`${group.typeName} has no option ${unknown.join(', ')}: remove its bad value`);
    const links: string[] = [];
    sections.push(
      `## ${group.title}`,
      '',
      `\`${group.typeName}\`, from \`${group.entry}\`.${description ? ` ${description}` : ''}`,
      '',
    );
    for (const typeName of group.seeAlso ?? []) {
      sections.push(typeIntro(program, entries.get(group.entry) as string, typeName), '');
    }
    for (const [j, option] of options.entries()) {
      const heading = `${group.prefix}${option.name}`;
      links.push(`[\`${heading}\`](#${anchors[i]?.options[j]})`);
      const where = `${group.typeName}.${option.name}`;
      if (!option.description) gaps.push(`${where}: no description`);
      if (option.defaults.length === 0) gaps.push(`${where}: no @default`);
      if (option.examples.length === 0) gaps.push(`${where}: no @example`);
      if (defaults && option.name in defaults) checkDefault(where, option.defaults, defaults[option.name]);
      if (!(option.name in group.badValues)) throw new Error(`${where} has no bad value in ${OPTION_GROUPS_FILE}`);
      const value = group.badValues[option.name];
      const error = await group.attempt(option.name, value);
      if (error !== undefined && !(error instanceof TypeError)) {
        throw new Error(`${where}: ${group.shown(option.name, value)} threw ${String(error)}, not a TypeError`);
      }
      if (error === undefined) gaps.push(`${where}: ${group.shown(option.name, value)} is accepted`);
      if (error instanceof TypeError && /absent|not a kanaMeter option/.test(error.message)) {
        throw new Error(`${where} is in the type but refused as unknown at run time: ${error.message}`);
      }

      const related = new Set(
        [...anchorOfType]
          .filter(
            ([typeName, target]) => target !== anchors[i]?.group && new RegExp(`\\b${typeName}\\b`).test(option.type),
          )
          .map(([, target]) => target),
      );
      sections.push(`### \`${heading}\``, '');
      if (option.description) sections.push(option.description, '');
      sections.push(
        `- **Type:** ${code(option.type)}${[...related].map((target) => ` ([see below](#${target}))`).join('')}${
          option.optional ? '' : ', required'
        }`,
        ...option.defaults.map((text) => `- **Default:** ${defaultText(text)}`),
        ...option.examples.map((text) => `- **Example:** ${code(text)}`),
        error === undefined
          ? `- **A bad value:** not checked yet: ${code(group.shown(option.name, value))} is accepted.`
          : `- **A bad value:** ${code(group.shown(option.name, value))} throws ${code(`TypeError: ${(error as TypeError).message}`)}`,
        '',
      );
    }
    toc.push(`- [${group.title}](#${anchors[i]?.group}): ${links.join(', ')}`);
    for (const [j, option] of options.entries()) {
      const name = group.summaryName?.(option.name) ?? `${group.prefix}${option.name}`;
      summaryCells.push([
        `[\`${name}\`](${OPTIONS_REFERENCE}#${anchors[i]?.options[j]})`,
        option.defaults
          .map(defaultText)
          .join('; ')
          .replace(/^none: required$/, 'required'),
      ]);
    }
  }

  const markdown = [
    '<!-- Generated from the TSDoc in src/ by `npm run docs:options`: edit the TSDoc, then regenerate. -->',
    '',
    '# Options reference',
    '',
    'Every option of kana-meter, from its TSDoc. Options are checked once, when they are given: a bad',
    'value throws a `TypeError` naming the option, the value and what was expected (the API key is',
    'never echoed). `undefined` means the default, and your options object is never modified. Each',
    '"bad value" below is a real call, and its message is what that call throws.',
    '',
    ...toc,
    '',
    ...sections,
  ].join('\n');
  return { markdown: `${markdown.trimEnd()}\n`, summary: summaryTable(summaryCells), gaps };
}

/** The README's block that holds the summary, and the README path it is written to. */
export const OPTIONS_SUMMARY_MARKERS = {
  file: 'README.md',
  start: '<!-- options-summary: generated by `npm run docs:options` from the TSDoc -->',
  end: '<!-- /options-summary -->',
} as const;

/** Options and their defaults, two to a row so the README stays short; columns padded as Biome formats a table. */
function summaryTable(cells: readonly [string, string][]): string {
  const rows = [['option', 'default', 'option', 'default']];
  for (let i = 0; i < cells.length; i += 2) rows.push([...(cells[i] ?? []), ...(cells[i + 1] ?? ['', ''])]);
  const escaped = rows.map((row) => row.map((cell) => cell.replaceAll('|', '\\|')));
  const widths = [0, 1, 2, 3].map((column) => Math.max(3, ...escaped.map((row) => row[column]?.length ?? 0)));
  const line = (row: readonly string[]) =>
    `| ${row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join(' | ')} |`;
  const [header, ...body] = escaped;
  return [line(header ?? []), line(widths.map((width) => '-'.repeat(width))), ...body.map(line)].join('\n');
}

/** `readme` with its summary block replaced by `summary`; throws when the markers are missing. */
export function withOptionsSummary(readme: string, summary: string): string {
  const start = readme.indexOf(OPTIONS_SUMMARY_MARKERS.start);
  const end = readme.indexOf(OPTIONS_SUMMARY_MARKERS.end);
  if (start < 0 || end < start) throw new Error(`${OPTIONS_SUMMARY_MARKERS.file} has no options summary markers`);
  return `${readme.slice(0, start + OPTIONS_SUMMARY_MARKERS.start.length)}\n${summary}\n${readme.slice(end)}`;
}

const OPTION_GROUPS_FILE = 'scripts/options-reference.ts';

/** Inline code, fenced with more backticks than the text holds. */
function code(text: string): string {
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((run) => run.length));
  const fence = '`'.repeat(longest + 1);
  const pad = text.startsWith('`') || text.endsWith('`') ? ' ' : '';
  return `${fence}${pad}${text}${pad}${fence}`;
}

/** A `@default` the docs can check: a number, string, boolean, `undefined` or `{}` of those, and a `(comment)` after it. */
const LITERAL = /^(-?[\d.]+|'[^']*'|true|false|undefined|\{[^()`]*\})(?: \(.*\))?$/;

/** Throws when an option's literal `@default` is not the default the parser gives: the TSDoc must not drift from it. */
export function checkDefault(where: string, texts: readonly string[], parsed: unknown): void {
  for (const text of texts) {
    const literal = LITERAL.exec(text)?.[1];
    if (literal === undefined) continue;
    const documented: unknown = new Function(`return (${literal});`)();
    if (!isDeepStrictEqual(documented, parsed)) {
      throw new Error(`${where}: @default ${text}, but parseOptions gives ${JSON.stringify(parsed)}`);
    }
  }
}

/** A default as code when it is an expression (`1000`, `pino({...})`), keeping a trailing `(comment)` as text. */
function defaultText(text: string): string {
  if (!text.includes('`') && isExpression(text)) return code(text);
  const comment = /^([^`]*?) (\(.*\))$/.exec(text);
  if (comment && isExpression(comment[1] as string)) return `${code(comment[1] as string)} ${comment[2]}`;
  return text;
}

function isExpression(text: string): boolean {
  const output = ts.transpileModule(`(${text});`, { reportDiagnostics: true });
  return (output.diagnostics ?? []).length === 0;
}

/** `name: value, ...` of an object literal, without its braces. */
function properties(object: Record<string, unknown>): string {
  return literal(object).slice(2, -2);
}

/** A value as TypeScript source: single-quoted strings, `{ a: 1 }` objects. */
function literal(value: unknown): string {
  if (typeof value === 'string') return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
  if (Array.isArray(value)) return `[${value.map(literal).join(', ')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value).map(
      ([key, item]) => `${/^[A-Za-z_$][\w$]*$/.test(key) ? key : literal(key)}: ${literal(item)}`,
    );
    return entries.length === 0 ? '{}' : `{ ${entries.join(', ')} }`;
  }
  return String(value);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { markdown, summary, gaps } = await renderOptionsReference();
  writeFileSync(join(ROOT, OPTIONS_REFERENCE), markdown);
  const readmePath = join(ROOT, OPTIONS_SUMMARY_MARKERS.file);
  writeFileSync(readmePath, withOptionsSummary(readFileSync(readmePath, 'utf8'), summary));
  console.log(`Wrote ${OPTIONS_REFERENCE} and the options summary in ${OPTIONS_SUMMARY_MARKERS.file}.`);
  for (const gap of gaps) console.warn(`  gap: ${gap}`);
}
