// The fallback page, shown when the web app is not built. It creates nothing: a meeting's
// links carry secrets only the creating client makes (the server gets digests), and this page
// has no wasm core to make them. It only fills in the command for this server and says what
// a meeting link is when one was opened here.
const command = document.getElementById("create-command");
if (command) {
  command.textContent = `conclave meeting create --server ${window.location.origin}`;
}
const meetingLink = document.getElementById("meeting-link");
if (meetingLink && window.location.pathname.startsWith("/m/")) {
  meetingLink.hidden = false;
}
