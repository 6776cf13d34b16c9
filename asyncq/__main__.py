from asyncq.cli import main

main()
