// `req.kana`: the entitlement decision of an enforced request, typed on Express's Request (@types/express 4 and 5).

import type { EntitlementDecision } from '../config/decision.js';

declare global {
  namespace Express {
    interface Request {
      /**
       * The entitlement decision of this request, set by kana-meter's gate on enforced routes
       * (the last gate's, when several features are enforced). Undefined on other requests.
       */
      kana?: EntitlementDecision;
    }
  }
}
