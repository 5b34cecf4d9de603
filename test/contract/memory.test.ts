import { createMemoryStore } from '../../src/store/memory-store.ts'
import {
  alertContract,
  auditContract,
  cacheContract,
  sessionRevocationContract,
  storeContract,
} from './store-contract.ts'

storeContract('memory store', async () => ({ store: createMemoryStore(), close: async () => {} }))
cacheContract('memory store', async () => ({ store: createMemoryStore(), close: async () => {} }))
alertContract('memory store', async () => ({ store: createMemoryStore(), close: async () => {} }))
auditContract('memory store', async () => ({ store: createMemoryStore(), close: async () => {} }))
sessionRevocationContract('memory store', async () => {
  let now = Date.UTC(2026, 0, 1)
  return {
    store: createMemoryStore({ clock: { now: () => now } }),
    close: async () => {},
    later: async (seconds: number) => {
      now += seconds * 1000
    },
  }
})
