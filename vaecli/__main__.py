from vaecli.cli import main

main()
