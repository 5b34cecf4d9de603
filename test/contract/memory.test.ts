import { createMemoryStore } from '../../src/store/memory-store.ts'
import { storeContract } from './store-contract.ts'

storeContract('memory store', async () => ({ store: createMemoryStore(), close: async () => {} }))
