// Exit codes follow sysexits(3), so cron wrappers and monitoring can tell
// "the manager is down" from "the config is wrong" without parsing text.
export const EXIT = {
  ok: 0,
  usage: 64,
  rejected: 65,
  unavailable: 69,
  ioError: 74,
  tempFail: 75,
  noPermission: 77,
  config: 78,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
