// Type-checks a Markdown code block with the repository's TypeScript and tsconfig.json, as a module of its own beside the Markdown file.

import { join, relative } from 'node:path';
import ts from 'typescript';
import { readCompilerOptions } from '../../scripts/compiler-options.js';
import type { CodeBlock } from './markdown-blocks.js';

export interface BlockDiagnostic {
  /** `README.md:23:5 - error TS2304: Cannot find name 'app'.`: where, in the Markdown file or a context file. */
  readonly text: string;
  readonly code: number;
}

/**
 * Checks blocks one program each, so nothing one block declares (a `declare global`, say) reaches
 * another. Library and source files are parsed once and shared between the programs.
 */
export class BlockTypeChecker {
  readonly #root: string;
  readonly #options: ts.CompilerOptions;
  readonly #parsed = new Map<string, ts.SourceFile | undefined>();

  constructor(root: string) {
    this.#root = root;
    // A block is a module even without import or export, so top-level await works in every one.
    this.#options = { ...readCompilerOptions(root), noEmit: true, moduleDetection: ts.ModuleDetectionKind.Force };
  }

  /** The public entries a block can import, as tsconfig.json maps them to the sources. */
  get entries(): Record<string, readonly string[]> {
    return { ...this.#options.paths };
  }

  /** Compiler messages for the block and its context files, empty when they type-check. */
  check(markdownFile: string, block: CodeBlock): BlockDiagnostic[] {
    const fileName = join(this.#root, `${markdownFile}.${block.firstLine}.ts`);
    const contexts = block.context.map((file) => join(this.#root, file));
    const missing = contexts.find((context) => !ts.sys.fileExists(context));
    if (missing)
      throw new Error(`${markdownFile}:${block.markerLine}: no context file ${relative(this.#root, missing)}`);

    const host = ts.createCompilerHost(this.#options);
    const { getSourceFile, fileExists, readFile } = host;
    // The block is read from memory and parsed by the program (module detection, ESM format); other files once.
    host.fileExists = (name) => name === fileName || fileExists.call(host, name);
    host.readFile = (name) => (name === fileName ? block.code : readFile.call(host, name));
    host.getSourceFile = (name, ...rest) => {
      if (name === fileName) return getSourceFile.call(host, name, ...rest);
      if (!this.#parsed.has(name)) this.#parsed.set(name, getSourceFile.call(host, name, ...rest));
      return this.#parsed.get(name);
    };
    const program = ts.createProgram({ rootNames: [...contexts, fileName], options: this.#options, host });
    const source = program.getSourceFile(fileName) as ts.SourceFile;
    const checked = [source, ...contexts.map((context) => program.getSourceFile(context))];
    const diagnostics = [
      ...program.getOptionsDiagnostics(),
      ...checked.flatMap((file) => [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]),
    ];

    return diagnostics.map((diagnostic) => {
      const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
      let where = markdownFile;
      if (diagnostic.file && diagnostic.start !== undefined) {
        const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
        where =
          diagnostic.file === source
            ? `${markdownFile}:${block.firstLine + line}:${character + 1}`
            : `${relative(this.#root, diagnostic.file.fileName)}:${line + 1}:${character + 1} (context of ${markdownFile}:${block.firstLine})`;
      }
      return { text: `${where} - error TS${diagnostic.code}: ${message}`, code: diagnostic.code };
    });
  }
}
