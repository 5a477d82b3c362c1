// The Kana emulator in its own process for the benchmark: a plan of a billion api-calls a month for u0..u9, or
// as many users as its first argument says (finite, far from used up).

import { startKanaEmulator } from 'kana-meter/emulator';

const users = Array.from({ length: Number(process.argv[2] ?? 10) }, (_, i) => `u${i}`);
const emulator = await startKanaEmulator({
  seed: {
    users: users.map((id) => ({ id })),
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    // Finite, so that enforcement takes units of it (leases), as it does for real plans; never reached here.
    packages: [{ id: 'large', features: [{ id: 'api-calls', limit: 1_000_000_000, resetPeriod: 'MONTH' }] }],
    subscriptions: users.map((userId) => ({ userId, packageId: 'large' })),
  },
});
process.send?.({ type: 'listening', url: emulator.url, apiKey: emulator.apiKey });

process.on('message', async (message: { type: string }) => {
  if (message.type === 'usage') {
    const total = users.reduce((sum, user) => sum + emulator.usage(user, 'api-calls'), 0);
    process.send?.({ type: 'usage', total, calls: emulator.usageCalls().length });
  } else if (message.type === 'exit') {
    await emulator.close();
    process.exit(0);
  }
});
