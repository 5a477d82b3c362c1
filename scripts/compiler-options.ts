// tsconfig.json's compiler options, for the scripts and tests that drive the TypeScript compiler (paths map kana-meter's entries to src/).

import { join } from 'node:path';
import ts from 'typescript';

export function readCompilerOptions(root: string): ts.CompilerOptions {
  const config = ts.getParsedCommandLineOfConfigFile(
    join(root, 'tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
        throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'));
      },
    },
  );
  if (!config) throw new Error(`cannot read ${join(root, 'tsconfig.json')}`);
  return config.options;
}

/** The source file tsconfig.json's paths map a public entry to, e.g. 'kana-meter/prometheus'. */
export function entrySourceFile(root: string, options: ts.CompilerOptions, entry: string): string {
  const [target] = options.paths?.[entry] ?? [];
  if (target === undefined) throw new Error(`tsconfig.json's paths do not map ${entry}`);
  return join(root, target);
}
