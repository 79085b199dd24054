/** The bytes tests/_burst_sender.ts sends: a fixed pattern, so that the test can check every byte it gets. */
export function senderPayload(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + (i >>> 8)) & 0xff;
  return bytes;
}
