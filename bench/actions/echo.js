// Echo as a Node.js action: runs on the launcher's event loop.
async function main(args) {
  return args;
}
