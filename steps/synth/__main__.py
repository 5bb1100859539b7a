from steps.synth.cli import main

main()
