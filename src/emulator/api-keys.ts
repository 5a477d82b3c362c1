// Kana private API keys: their shape, the emulator's generated key, and the Authorization check.
import { randomInt } from 'node:crypto';

/** Kana's private key format (API.md §2): prv_test_ or prv_live_, then letters and digits. */
export const PRIVATE_KEY = /^prv_(test|live)_[A-Za-z0-9]+$/;
/** A test-environment private key: the only kind the CLI accepts, since it prints its key. */
export const TEST_KEY = /^prv_test_[A-Za-z0-9]+$/;

const PRIVATE_KEY_HEADER = /^(Bearer )?prv_(test|live)_[A-Za-z0-9]+$/;
const KEY_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** 'prv_test_' + 32 random alphanumerics, like the keys Kana's dashboard hands out. */
export function generateApiKey(): string {
  let key = 'prv_test_';
  for (let i = 0; i < 32; i += 1) key += KEY_ALPHABET[randomInt(KEY_ALPHABET.length)];
  return key;
}

/** The message for a bad Authorization header, or null when it carries the emulator's key. */
export function authFailure(header: string | undefined, apiKey: string): string | null {
  // The texts after "Unauthenticated" are made up (API.md §2); they never echo the header.
  if (header === undefined || header === '') return 'Unauthenticated: missing Authorization header';
  if (!PRIVATE_KEY_HEADER.test(header)) {
    return 'Unauthenticated: the Authorization header must be a Kana private API key (prv_test_… or prv_live_…)';
  }
  const key = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : header;
  return key === apiKey ? null : 'Unauthenticated: invalid API key';
}
