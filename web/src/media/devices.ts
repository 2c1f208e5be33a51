// Camera, microphone and speaker: opening them, listing them, and saying in plain words why
// one could not be opened.

export interface LocalMedia {
  stream: MediaStream;
  microphone: MediaStreamTrack | null;
  camera: MediaStreamTrack | null;
  /** Why a device could not be opened, in words for people. */
  problems: string[];
}

export interface DeviceChoice {
  cameraId?: string;
  microphoneId?: string;
}

export function explainMediaError(error: unknown, device: 'camera' | 'microphone' | 'screen'): string {
  const name = error instanceof DOMException ? error.name : '';
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return device === 'screen'
        ? 'Screen sharing was cancelled or not allowed.'
        : `Your browser was not allowed to use the ${device}. Allow it in the address bar's site settings, then try again.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${device} was found. Plug one in, or join without it.`;
    case 'NotReadableError':
    case 'AbortError':
      return `The ${device} is in use by another application, or not working. Close the other application and try again.`;
    default:
      return `The ${device} could not be started${error instanceof Error && error.message ? ` (${error.message})` : ''}.`;
  }
}

/**
 * 720p, so that the camera's simulcast layers (a quarter, half and full size) come out at about
 * 180p, 360p and 720p. `ideal`: a camera that cannot do it still opens.
 */
const CAMERA_CAPTURE: MediaTrackConstraints = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 24 } };

async function open(kind: 'audio' | 'video', deviceId: string | undefined): Promise<MediaStreamTrack> {
  const device: MediaTrackConstraints = deviceId ? { deviceId: { exact: deviceId } } : {};
  const constraints: MediaTrackConstraints | boolean = kind === 'video' ? { ...CAMERA_CAPTURE, ...device } : deviceId ? device : true;
  const stream = await navigator.mediaDevices.getUserMedia(kind === 'audio' ? { audio: constraints } : { video: constraints });
  const track = stream.getTracks()[0];
  if (!track) throw new DOMException('no track', 'NotFoundError');
  return track;
}

/** Opens the microphone and camera separately, so that one refused device leaves the other. */
export async function openLocalMedia(choice: DeviceChoice = {}): Promise<LocalMedia> {
  const problems: string[] = [];
  if (!navigator.mediaDevices?.getUserMedia) {
    return { stream: new MediaStream(), microphone: null, camera: null, problems: ['This page cannot use a camera or microphone (it needs a secure https address).'] };
  }
  let microphone: MediaStreamTrack | null = null;
  let camera: MediaStreamTrack | null = null;
  try {
    microphone = await open('audio', choice.microphoneId);
  } catch (e) {
    problems.push(explainMediaError(e, 'microphone'));
  }
  try {
    camera = await open('video', choice.cameraId);
  } catch (e) {
    problems.push(explainMediaError(e, 'camera'));
  }
  const stream = new MediaStream([microphone, camera].filter((t): t is MediaStreamTrack => t !== null));
  return { stream, microphone, camera, problems };
}

export async function replaceDevice(kind: 'audio' | 'video', deviceId: string): Promise<MediaStreamTrack> {
  return open(kind, deviceId);
}

export interface DeviceLists {
  cameras: MediaDeviceInfo[];
  microphones: MediaDeviceInfo[];
  speakers: MediaDeviceInfo[];
}

export async function listDevices(): Promise<DeviceLists> {
  const all = navigator.mediaDevices?.enumerateDevices ? await navigator.mediaDevices.enumerateDevices() : [];
  return {
    cameras: all.filter((d) => d.kind === 'videoinput'),
    microphones: all.filter((d) => d.kind === 'audioinput'),
    speakers: all.filter((d) => d.kind === 'audiooutput'),
  };
}

export function canPickSpeaker(): boolean {
  return 'setSinkId' in HTMLMediaElement.prototype;
}
