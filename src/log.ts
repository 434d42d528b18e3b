/**
 * The one place that configures winston. Logs go to stderr so that stdout
 * carries only command output (tables, --json documents).
 */
import winston from 'winston';

export type LogFormat = 'text' | 'json';
export const LOG_LEVELS = ['error', 'warn', 'info', 'verbose', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const text = winston.format.printf(({ level, message, timestamp, ...meta }) => {
  const extra = Object.keys(meta).length ? ` ${JSON.stringify(meta, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}` : '';
  return `${String(timestamp)} ${level}: ${String(message)}${extra}`;
});

const bigintSafe = winston.format((info) => {
  for (const [k, v] of Object.entries(info)) if (typeof v === 'bigint') (info as Record<string, unknown>)[k] = v.toString();
  return info;
});

export const log = winston.createLogger({
  level: 'info',
  levels: winston.config.npm.levels,
  transports: [new winston.transports.Console({ stderrLevels: [...LOG_LEVELS] })],
  format: winston.format.combine(winston.format.timestamp({ format: 'HH:mm:ss.SSS' }), text),
});

export function configureLogging(options: { level?: LogLevel; format?: LogFormat }): void {
  if (options.level) log.level = options.level;
  if (options.format === 'json') {
    log.format = winston.format.combine(winston.format.timestamp(), bigintSafe(), winston.format.json());
  }
}
