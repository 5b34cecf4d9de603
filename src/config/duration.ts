const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }

/** Parses `90`, `90s`, `10m`, `12h`, `7d`, `2w` into seconds. Undefined when it is not one of those. */
export function parseDurationSeconds(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined
  if (typeof value !== 'string') return undefined
  const m = /^(\d{1,9})\s*([smhdw]?)$/.exec(value.trim())
  if (m === null) return undefined
  return Number(m[1]) * UNITS[m[2] || 's']!
}

/** `7d`, `12h`, `10m`, `45s`: the largest unit up to days that divides evenly. */
export function formatDuration(seconds: number): string {
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`
  }
  return `${seconds}s`
}
