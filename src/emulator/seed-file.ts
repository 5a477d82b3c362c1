// Seed files for the CLI: read and parse JSON, with errors that name the file (and line) at fault.
import { readFile } from 'node:fs/promises';
import type { EmulatorSeed } from './seed.js';

/** A seed file that cannot be read or parsed; the message is one line and names the file. */
export class SeedFileError extends Error {
  override readonly name = 'SeedFileError';
}

/** "line L, column C" for a character offset in `text` (both 1-based). */
function lineAndColumn(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return `line ${line}, column ${column}`;
}

/** JSON.parse's message, with the line and column when it gives only a character position. */
function describeSyntaxError(error: Error, text: string): string {
  const message = error.message.split('\n')[0] ?? 'invalid JSON';
  const position = /at position (\d+)/.exec(message);
  if (position === null || /\bline \d+/.test(message)) return message;
  return `${message} (${lineAndColumn(text, Number(position[1]))})`;
}

/**
 * Reads `path` as JSON. The shape is not checked here: startKanaEmulator() validates the seed
 * (EmulatorSeedError names the field path), so the file and the API obey one set of rules.
 */
export async function readSeedFile(path: string): Promise<EmulatorSeed> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    const reason =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (message.split('\n')[0] ?? code);
    throw new SeedFileError(`cannot read the seed file ${path}: ${reason}`);
  }
  // A byte-order mark, as some editors on Windows write, is not JSON.
  if (text.startsWith('\uFEFF')) text = text.slice(1);
  try {
    return JSON.parse(text) as EmulatorSeed;
  } catch (error) {
    throw new SeedFileError(`the seed file ${path} is not valid JSON: ${describeSyntaxError(error as Error, text)}`);
  }
}
