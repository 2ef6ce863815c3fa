// In flight for 1 s as an async Node.js action: a pending promise, no worker.
async function main(args) {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  return { id: args.i };
}
